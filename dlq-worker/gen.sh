#!/bin/sh
# Regenerates internal/handler/routes.go and internal/types/types.go from dlq.api, and nothing else.
#
# goctl also writes a skeleton for every handler, logic, middleware, main and etc file it does not find
# under its own names; several of ours live under other names (the page's IndexHandler in ui.go, the
# middlewares in auth.go, main in dlqworker.go), so its skeletons would clash with them. It therefore runs
# in a scratch copy, and only the two generated files are copied back.
set -eu
cd "$(dirname "$0")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp dlq.api "$scratch/"
go tool goctl api go -api "$scratch/dlq.api" -dir "$scratch" --style gozero >/dev/null
# goctl names the module path after the scratch directory; ours is github.com/epro-intake/dlq-worker.
module=$(sed -n "s/^module //p" go.mod)
for f in internal/handler/routes.go internal/types/types.go; do
  sed "s#\"[^\"]*/internal/#\"$module/internal/#" "$scratch/$f" > "$f"
done
gofmt -l internal/handler/routes.go internal/types/types.go
