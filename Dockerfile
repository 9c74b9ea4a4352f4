# telesfu node: control API + signaling on HTTP, media workers on UDP (one port per worker).
#   docker build -t telesfu .
#   docker run --rm -p 8080:8080 -p 40000-40001:40000-40001/udp \
#     -e TELESFU_HTTP_HOST=0.0.0.0 -e TELESFU_MEDIA_LISTEN_IPS=0.0.0.0 \
#     -e TELESFU_MEDIA_ANNOUNCED_IP=<public ip> -e TELESFU_MEDIA_WORKERS=2 telesfu
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 telesfu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sfu ./sfu
COPY control ./control
COPY signaling ./signaling
COPY bench ./bench
RUN pip install . && rm -rf /root/.cache

USER telesfu
EXPOSE 8080/tcp
EXPOSE 40000-40015/udp
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["telesfu"]
CMD ["serve"]
