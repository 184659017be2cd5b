"""The command-line flags and start-up steps the tools share, defined once.

py-faster-rcnn's scripts each spell out `--gpu/--cpu`, `--cfg`, `--set`, print their
arguments and the config, and wait for a model file; users and the experiment scripts rely
on those flags, their defaults, their help and the printed lines, so the helpers here take
each script's own wording where the scripts differ and must be called in the script's
order (argparse lists flags, and prints the Namespace, in the order they were added).
"""
import _init_paths  # noqa: F401
import argparse
import os
import pprint
import sys
import time

from fast_rcnn.config import cfg, cfg_from_file, cfg_from_list

GPU_HELP = 'GPU device id to use [0]; -1 for the CPU'
GPU_LIST_HELP = ('GPU device id to use [0]; -1 for the CPU; several ids (0,1,2,3) train '
                 'data-parallel, one process per device (CPU processes without GPUs)')
GPU_ID_HELP = 'GPU id to use; -1 for the CPU'


def _yes(text):
    """--wait's value: anything but 0/false/no (any case) means yes."""
    return str(text).lower() not in ('0', 'false', 'no')


def add_device_args(parser, gpu_help=GPU_HELP, cpu_dest='cpu', cpu_help='run on the CPU',
                    gpu_type=int):
    """`--gpu N` (default 0; -1 is the CPU) and `--cpu`. Training tools take a list
    (`gpu_type=str`, read by utils.data_parallel.parse_gpus)."""
    parser.add_argument('--gpu', dest='gpu_id', help=gpu_help, default=gpu_type(0), type=gpu_type)
    parser.add_argument('--cpu', dest=cpu_dest, help=cpu_help, action='store_true')


def add_net_args(parser, net_help='model to test'):
    """`--def` (the prototxt) and `--net` (the .caffemodel)."""
    parser.add_argument('--def', dest='prototxt', help='prototxt file defining the network',
                        default=None, type=str)
    parser.add_argument('--net', dest='caffemodel', help=net_help, default=None, type=str)


def add_cfg_arg(parser):
    """`--cfg FILE`: a YAML config merged into fast_rcnn.config.cfg."""
    parser.add_argument('--cfg', dest='cfg_file', help='optional config file', default=None, type=str)


# How long --wait waits for --net by default, and the variable that changes it.
WAIT_TIMEOUT_ENV = 'FRCN_WAIT_TIMEOUT'
DEFAULT_WAIT_TIMEOUT = 3600.0


def _seconds(text):
    """A --wait_timeout value: seconds (>= 0; 0, 'none' or 'inf' mean no limit)."""
    if str(text).lower() in ('none', 'inf', 'infinity', 'forever'):
        return 0.0
    value = float(text)
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError('expected seconds >= 0 (0 = no limit), got %r' % text)
    return value


def add_wait_arg(parser):
    """`--wait` (default yes): wait for --net to appear (a training run still writing it),
    and `--wait_timeout`: for at most this long."""
    parser.add_argument('--wait', dest='wait', help='wait until net file exists', default=True,
                        type=_yes)
    parser.add_argument('--wait_timeout', dest='wait_timeout', type=_seconds, default=None,
                        help='with --wait, give up after this many seconds [${} or {:g}; 0 = '
                             'no limit]'.format(WAIT_TIMEOUT_ENV, DEFAULT_WAIT_TIMEOUT))


def add_set_arg(parser, set_help='set config keys'):
    """`--set KEY VALUE ...`: config overrides; takes the rest of the command line."""
    parser.add_argument('--set', dest='set_cfgs', help=set_help, default=None,
                        nargs=argparse.REMAINDER)


BF16_HELP = ('compute in bfloat16 (as CAFFE_BF16=1 does): convolutions, and inner products '
             'where the hardware multiplies bf16 natively (AMX, AVX512-BF16, GPUs); weights, '
             'gradients, losses and Python layers stay float32')


def add_precision_arg(parser):
    """`--bf16`: run the nets in bfloat16 (caffe.set_precision('bf16')); see BF16_HELP.
    Without it the precision is the engine's default, bf16 if CAFFE_BF16=1 is set."""
    parser.add_argument('--bf16', dest='bf16', help=BF16_HELP, action='store_true')


def apply_precision(args):
    """Make `--bf16` take effect, here and in the processes this one starts (the alt-opt
    stages run in spawned children, which read CAFFE_BF16 when they import caffe), and
    say which precision the nets compute in. Returns 'bf16' or 'fp32'."""
    import caffe
    from caffe import _config
    if getattr(args, 'bf16', False):
        os.environ['CAFFE_BF16'] = '1'
        caffe.set_precision('bf16')
    precision = caffe.get_precision()
    if precision == 'bf16':
        dev = _config.device()
        print('Compute precision: bf16 (convolutions in bf16; inner products in %s; CPU native '
              'bf16: %s)' % ('bf16' if _config.low_precision_matmuls_pay(dev) else 'fp32',
                             _config.cpu_bf16_support() or 'none'))
    return precision


def parse_or_help(parser, argv=None):
    """Parse `argv` (the command line if None); with no arguments at all, print the help
    and exit with status 1, as py-faster-rcnn's tools do."""
    if argv is None and len(sys.argv) == 1:
        parser.print_help()
        sys.exit(1)
    return parser.parse_args(argv)


def print_args(args):
    print('Called with args:')
    print(args)


def load_cfg(args, skip_empty=False):
    """Merge --cfg's file, then --set's pairs, into cfg. With `skip_empty`, an empty
    --cfg ''/--set counts as absent (demo.py's behaviour); otherwise only None does."""
    given = bool if skip_empty else (lambda v: v is not None)
    if given(args.cfg_file):
        cfg_from_file(args.cfg_file)
    if given(args.set_cfgs):
        cfg_from_list(args.set_cfgs)


def print_cfg():
    print('Using config:')
    pprint.pprint(cfg)


def wait_timeout(value=None):
    """The bound of --wait in seconds (0 = none): the flag's value, else $FRCN_WAIT_TIMEOUT,
    else DEFAULT_WAIT_TIMEOUT."""
    if value is not None:
        return float(value)
    env = os.environ.get(WAIT_TIMEOUT_ENV, '').strip()
    if env:
        try:
            return _seconds(env)
        except (ValueError, argparse.ArgumentTypeError):
            sys.exit('{}={!r}: expected seconds >= 0 (0 = no limit)'.format(WAIT_TIMEOUT_ENV, env))
    return DEFAULT_WAIT_TIMEOUT


def _duration(seconds):
    seconds = int(round(seconds))
    return '{:d}:{:02d}:{:02d}'.format(seconds // 3600, seconds // 60 % 60, seconds % 60)


def wait_for_file(path, wait=True, timeout=None, poll=10.0):
    """If `wait`, block until `path` exists (a training run may still be writing it),
    polling every `poll` seconds and saying what it waits for and for how long; exit with
    a message naming the file once `timeout` seconds (see wait_timeout) have passed."""
    if path is None or not wait:
        return
    limit = wait_timeout(timeout)
    start = time.monotonic()
    while not os.path.exists(path):
        waited = time.monotonic() - start
        if limit and waited >= limit:
            sys.exit('Gave up waiting for {} after {} (--wait_timeout or ${} sets the limit, '
                     '--wait 0 does not wait); is the path right, and is a training run '
                     'writing it?'.format(path, _duration(waited), WAIT_TIMEOUT_ENV))
        print('Waiting for {} to exist... ({} so far, giving up after {})'.format(
            path, _duration(waited), _duration(limit) if limit else 'no limit'))
        time.sleep(min(poll, limit - waited) if limit else poll)
