package handler

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/epro-api/internal/config"
)

// ServerLimits sets the http.Server limits of c on the server that serves epro-api; main starts go-zero's
// server with it and the tests apply it to theirs, so both run the same limits.
//
// go-zero sets only ReadTimeout and WriteTimeout (from Timeout) and runs before this option, which replaces
// its ReadTimeout with HTTP.ReadTimeout and states WriteTimeout as go-zero computes it, so that a server
// built without go-zero's starter gets it too. Open connections beyond MaxConns are closed as they are
// accepted, without an answer: go-zero's MaxConns middleware, which ServerConf turns off, counted only
// requests inside handlers, so clients stuck sending headers were never counted.
func ServerLimits(c config.Config) rest.StartOption {
	return func(s *http.Server) {
		s.ReadHeaderTimeout = c.HTTP.ReadHeaderTimeout
		s.ReadTimeout = c.HTTP.ReadTimeout
		s.IdleTimeout = c.HTTP.IdleTimeout
		s.MaxHeaderBytes = c.HTTP.MaxHeaderBytes
		if c.Timeout > 0 {
			// go-zero's factor: room to write the answer of a handler that used all of Timeout.
			s.WriteTimeout = 11 * time.Duration(c.Timeout) * time.Millisecond / 10
		}
		s.ConnState = connLimit(int64(c.MaxConns), s.ConnState)
	}
}

// connLimit counts open connections and closes a new one when max are already open. The server still
// reports the closed connection's StateClosed, which gives its count back.
func connLimit(limit int64, next func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	var open atomic.Int64
	return func(conn net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			if open.Add(1) > limit {
				_ = conn.Close()
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
		if next != nil {
			next(conn, state)
		}
	}
}
