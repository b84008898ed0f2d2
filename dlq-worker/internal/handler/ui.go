package handler

import (
	"io/fs"
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/web"
)

// UIPath is where the web page is served.
const UIPath = "/ui/"

func uiFS() http.FileSystem {
	sub, err := fs.Sub(web.FS, "static")
	if err != nil {
		panic(err) // the embed pattern names static/, so this cannot fail at run time
	}
	return http.FS(sub)
}

// IndexHandler sends / to the web page.
func IndexHandler(_ *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, UIPath, http.StatusFound)
	}
}
