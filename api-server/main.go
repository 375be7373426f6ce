// Command api-server serves the REST API (see package apiserver); `api-server
// token` prints a JWT signed with the configured secret.
package main

import (
	"flag"
	"net/http"
	"os"

	"github.com/viworks/backend-agent/api-server/apiserver"
	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
)

const (
	name = "api-server"
	port = 8080
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if buildinfo.PrintIfAsked(os.Stdout, name, args) {
		return 0
	}
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:])
	}
	return service.Main(name, port, args, func(p *service.Process) (service.Role, error) {
		cfg, secretFile, err := service.DevJWTSecret(p.Cfg, true)
		if err != nil {
			return service.Role{}, err
		}
		if secretFile != "" {
			p.Log.WithField("file", secretFile).Warn("dev mode: generated a random JWT secret for this run (the placeholder is never used); mint a token with: api-server token --dev --subject NAME --role admin")
		}
		jwt, err := service.NewJWT(cfg)
		if err != nil {
			return service.Role{}, err
		}
		api, err := apiserver.NewFromProcess(p, jwt)
		if err != nil {
			return service.Role{}, err
		}
		mux := http.NewServeMux()
		api.Register(mux)
		return service.Role{Mux: mux, Run: api.Run, Drain: api.Drain}, nil
	})
}

func token(args []string) int {
	fs := flag.NewFlagSet(name+" token", flag.ContinueOnError)
	return service.Token(name+" token", fs, args, func() (config.Config, error) {
		base := config.Default()
		base.Server.Port = port
		return base, nil
	})
}
