package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/errcode"
)

// RunOptions make unknown paths and methods answer in the errcode shape too, instead of net/http's plain text.
func RunOptions() []rest.RunOption {
	return []rest.RunOption{
		rest.WithNotFoundHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			errcode.Write(r.Context(), w, errcode.New(http.StatusNotFound, errcode.NotFound, "no such endpoint"))
		})),
		rest.WithNotAllowedHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			errcode.Write(r.Context(), w, errcode.New(http.StatusMethodNotAllowed, errcode.MethodNotAllowed, "method not allowed on this endpoint"))
		})),
	}
}
