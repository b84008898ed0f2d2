package auth

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/service"

	"github.com/epro-intake/epro-api/internal/config"
)

// tokenConfig is the part of the service config the token command needs, so it runs where only the key is
// set (no Kafka, MySQL or Redis address).
type tokenConfig struct {
	// Mode is go-zero's (service.ServiceConf); unset is its default, pro.
	Mode string `json:",optional"`
	Auth config.AuthConf
}

// TokenCommand implements `epro-api token -patient PAT-0001 [-trial T] -ttl 8h`: it prints a development
// HS256 token for one patient, signed with the configured key (Auth.Mode hs256 only, which the service
// accepts only in Mode dev or test). It returns the process exit code.
func TokenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("f", "etc/epro-api.yaml", "the config file (its Auth.Secret signs the token)")
	patient := fs.String("patient", "", "the patient id the token speaks for, e.g. PAT-0001 (required)")
	trial := fs.String("trial", "", "the trial the token is restricted to (required when Auth.TrialClaim is set)")
	ttl := fs.Duration("ttl", 8*time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var c tokenConfig
	if err := conf.Load(*configFile, &c, conf.UseEnv()); err != nil {
		fmt.Fprintf(stderr, "token: load %s: %v\n", *configFile, err)
		return 1
	}
	if c.Mode == "" {
		c.Mode = service.ProMode
	}
	if err := c.Auth.Validate(c.Mode); err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	if *ttl > c.Auth.MaxTTL {
		fmt.Fprintf(stderr, "token: -ttl %s exceeds Auth.MaxTTL %s\n", *ttl, c.Auth.MaxTTL)
		return 2
	}
	token, err := Mint(c.Auth, *patient, *trial, *ttl, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 2
	}
	fmt.Fprintln(stdout, token)
	return 0
}
