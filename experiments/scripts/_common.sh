# Shared by the experiment scripts: data set settings and logging, as py-faster-rcnn's scripts do.
# Usage inside a script:  source "$(dirname "$0")/_common.sh" SCHEME "$@"

SCHEME=$1; shift
GPU_ID=$1
NET=$2
NET_lc=${NET,,}
DATASET=$3

array=( "$@" )
len=${#array[@]}
EXTRA_ARGS=${array[@]:3:$len}
EXTRA_ARGS_SLUG=${EXTRA_ARGS// /_}
# The slug is part of the log file name: a path in the extra args (--set DATA_DIR /x/y)
# must not turn it into folders.
EXTRA_ARGS_SLUG=${EXTRA_ARGS_SLUG//\//_}

if [ -z "$GPU_ID" ] || [ -z "$NET" ] || [ -z "$DATASET" ]; then
  echo "usage: $0 GPU_ID NET DATASET [--set KEY VALUE ...]   (GPU_ID -1 for the CPU;"
  echo "  a list such as 0,1,2,3 trains data-parallel, one process per GPU)"
  echo "  NET: ZF | VGG_CNN_M_1024 | VGG16 | ToyNet;  DATASET: pascal_voc | coco | toy"
  exit 1
fi

# Training takes the whole GPU list (data-parallel); testing runs on its first device.
TEST_GPU_ID=${GPU_ID%%,*}

CFG_PREFIX=""
case $DATASET in
  pascal_voc)
    TRAIN_IMDB="voc_2007_trainval"
    TEST_IMDB="voc_2007_test"
    PT_DIR="pascal_voc"
    ;;
  coco)
    TRAIN_IMDB="coco_2014_train"
    TEST_IMDB="coco_2014_minival"
    PT_DIR="coco"
    ;;
  toy)
    # The embedded synthetic data set (make it with data/scripts/make_toy_dataset.py).
    TRAIN_IMDB="toy_2007_trainval"
    TEST_IMDB="toy_2007_test"
    PT_DIR="toy"
    CFG_PREFIX="toy_"
    ;;
  *)
    echo "No dataset given"
    exit 1
    ;;
esac

# ImageNet weights when they are there (data/scripts/fetch_imagenet_models.sh); the toy
# net trains from scratch.
WEIGHTS_ARGS=""
if [ -f "data/imagenet_models/${NET}.v2.caffemodel" ]; then
  WEIGHTS_ARGS="--weights data/imagenet_models/${NET}.v2.caffemodel"
elif [ "$DATASET" != "toy" ]; then
  echo "data/imagenet_models/${NET}.v2.caffemodel not found: run data/scripts/fetch_imagenet_models.sh"
  exit 1
fi

# The tools run with the repository's virtual environment when there is one (make test /
# make demo create it), so the scripts work without activating it.
if [ -x .venv/bin/python ]; then
  export PATH="$(pwd)/.venv/bin:$PATH"
fi

mkdir -p experiments/logs
LOG="experiments/logs/${SCHEME}_${NET}_${EXTRA_ARGS_SLUG}.txt.`date +'%Y-%m-%d_%H-%M-%S'`"
exec &> >(tee -a "$LOG")
echo Logging output to "$LOG"
export PYTHONUNBUFFERED="True"
