#!/bin/sh
# Regenerates internal/handler/routes.go and internal/types/types.go from dlq.api. Existing handler and
# logic files are left as they are.
set -eu
cd "$(dirname "$0")"
go tool goctl api go -api dlq.api -dir . --style gozero
