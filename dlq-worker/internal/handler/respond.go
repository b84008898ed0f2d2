package handler

import (
	"errors"
	"net/http"

	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// parse reads a request with httpx.Parse. Validation errors from types' Validate pass through; any other
// parse error becomes a fixed VALIDATION_FAILED, because httpx's messages quote the input.
func parse(r *http.Request, v any) error {
	err := httpx.Parse(r, v)
	if err == nil {
		return nil
	}
	var e *errcode.Error
	if errors.As(err, &e) {
		return e
	}
	return types.BadRequest()
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, resp any, err error) {
	if err != nil {
		errcode.Write(r.Context(), w, err)
		return
	}
	httpx.WriteJsonCtx(r.Context(), w, status, resp)
}

// RunOptions make unknown paths and methods answer in the errcode shape, and serve the web page.
func RunOptions() []rest.RunOption {
	return []rest.RunOption{
		rest.WithNotFoundHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			errcode.Write(r.Context(), w, errcode.New(http.StatusNotFound, errcode.NotFound, "no such endpoint"))
		})),
		rest.WithNotAllowedHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			errcode.Write(r.Context(), w, errcode.New(http.StatusMethodNotAllowed, errcode.MethodNotAllowed, "method not allowed on this endpoint"))
		})),
		rest.WithFileServer(UIPath, uiFS()),
	}
}
