# captionbot: the Telegram bot with its packaged checkpoint, running as a non-root user.
#   docker build -t captionbot .
#   docker run -e CAPTIONBOT_TOKEN=123:abc captionbot
# The image carries the SqueezeNet ImageNet weights that the packaged checkpoint was trained
# on, so it needs no download at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAPTIONBOT_WEIGHTS_DIR=/app/weights \
    TF_CPP_MIN_LOG_LEVEL=3

WORKDIR /app

# The CPU build of TensorFlow keeps the image about 1.5 GB smaller than the CUDA one; the
# project itself is then installed without pulling the full "tensorflow" distribution.
RUN pip install "tensorflow-cpu==2.21.*" "keras>=3.0" "python-telegram-bot>=21.0" \
        "pillow>=10.1" "numpy>=1.26" "nltk>=3.8" "aiohttp>=3.9" "pyyaml>=6.0" \
        "h5py>=3.10" "tqdm>=4.66" "matplotlib>=3.8"

ADD --checksum=sha256:17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da \
    https://github.com/DeepCognition/keras-squeezenet/releases/download/v0.4/squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5 \
    /app/weights/squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5

COPY pyproject.toml README.md config.yaml ./
COPY captioner ./captioner
COPY training ./training
COPY bot ./bot
COPY captionbot ./captionbot
RUN pip install --no-deps --editable . \
    && useradd --create-home --uid 10001 captionbot \
    && chmod -R a+rX /app

USER captionbot
CMD ["captionbot", "serve"]
