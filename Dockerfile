# One image for the web, dialer and worker services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callcenter ./callcenter
COPY webui ./webui
COPY crm ./crm
COPY chat ./chat
# The config renderers read their templates from the source tree.
COPY sip-config ./sip-config
COPY freeswitch ./freeswitch
RUN pip install --no-cache-dir -e .
ENV CALLCENTER_WEB_HOST=0.0.0.0 CALLCENTER_DATA_DIR=/data
VOLUME /data
EXPOSE 8035
ENTRYPOINT ["callcenter"]
