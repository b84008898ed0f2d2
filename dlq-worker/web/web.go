// Package web holds the ops page: plain HTML, CSS and JavaScript with no build step, embedded in the binary
// and served under /ui/. The page talks to the same API as any client, with the bearer token the operator
// pastes; it keeps the token in sessionStorage, or localStorage when asked to remember it.
package web

import "embed"

// FS holds static/.
//
//go:embed static
var FS embed.FS
