#!/bin/bash
# Health check for containers without curl: GET http://127.0.0.1:PORT/PATH over bash's /dev/tcp.
# Exits 0 only on an HTTP 200 answer.
#
#   tributary-healthcheck 9090 /readyz
set -u
port="${1:?usage: tributary-healthcheck PORT [PATH]}"
path="${2:-/readyz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "GET $path: ${status%$'\r'}" >&2; exit 1 ;;
esac
