package config_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/epro-api/internal/config"
)

// A server built from the default configuration, as main builds it, logs no stat line: go-zero sets logx up
// once per process, from the first server's Log, so this is the only test in this package that builds one.
func TestDefaultServerLogsNoStatLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "epro-api.yaml")
	if err := os.WriteFile(file, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	rest.MustNewServer(c.ServerConf())
	var out lockedBuffer
	logx.SetWriter(logx.NewWriter(&out))
	logx.Statf("CPU: 1m, MEMORY: probe")
	logx.Info("an info line")
	if got := out.String(); strings.Contains(got, "probe") || !strings.Contains(got, "an info line") {
		t.Errorf("log output %q: want the info line and no stat line", got)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
