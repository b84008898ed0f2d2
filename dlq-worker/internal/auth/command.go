package auth

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/dlq-worker/internal/config"
)

// tokenConfig is the part of the service config the token command needs, so it runs where only the key is
// set (no Kafka or MySQL address).
type tokenConfig struct {
	Auth config.AuthConf
}

// TokenCommand implements `dlq-worker token -sub alice -role operator -ttl 8h`: it prints a development HS256
// token signed with the configured key (hs256 mode only). It returns the process exit code.
func TokenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("f", "etc/dlq-worker.yaml", "the config file (its Auth.Secret signs the token)")
	sub := fs.String("sub", "", "the actor the token names, e.g. alice (required)")
	role := fs.String("role", "", "reviewer or operator (required)")
	ttl := fs.Duration("ttl", 8*time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var c tokenConfig
	if err := conf.Load(*configFile, &c, conf.UseEnv()); err != nil {
		fmt.Fprintf(stderr, "token: load %s: %v\n", *configFile, err)
		return 1
	}
	if err := c.Auth.Validate(); err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	if c.Auth.Mode != bearer.ModeHS256 {
		fmt.Fprintf(stderr, "token: Auth.Mode is %s: tokens come from the OIDC issuer\n", c.Auth.Mode)
		return 1
	}
	if *ttl > c.Auth.MaxTTL {
		fmt.Fprintf(stderr, "token: -ttl %s exceeds Auth.MaxTTL %s\n", *ttl, c.Auth.MaxTTL)
		return 2
	}
	token, err := Mint([]byte(c.Auth.Secret), c.Auth.RoleClaim, *sub, *role, *ttl, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 2
	}
	fmt.Fprintln(stdout, token)
	return 0
}
