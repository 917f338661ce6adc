# gen-lightning on a PyTorch CUDA base image. Build: docker build -t gen-lightning .
# Run:   docker run --gpus all -v $PWD/runs:/app/runs gen-lightning fit --config configs/gan/dcgan_digits.yaml
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    WANDB_DIR=/app/runs
WORKDIR /app

# Dependencies first (cached layer), then the source.
COPY pyproject.toml README.md ./
COPY gen_lightning ./gen_lightning
# DS_BUILD_OPS=0: DeepSpeed compiles its ops on first use (JIT) instead of at install time.
RUN DS_BUILD_OPS=0 pip install --no-build-isolation ".[deepspeed]"
COPY configs ./configs
COPY launch ./launch

# Smoke command: the CLI imports and lists its verbs.
RUN gen-lightning --help > /dev/null
ENTRYPOINT ["gen-lightning"]
CMD ["--help"]
