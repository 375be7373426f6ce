package apiserver

import (
	"net/http"

	"github.com/viworks/backend-agent/api-server/dashboard"
)

// registerDashboard mounts the operator dashboard at / (and its files under
// /ui/) beside the API, so every api-server and bin/viworks serve it.
func (s *Server) registerDashboard(mux *http.ServeMux) {
	d, err := dashboard.New(dashboard.Config{})
	if err != nil { // the page is embedded and rendered in tests: a broken build
		s.log.WithError(err).Error("dashboard not served")
		return
	}
	d.Register(mux)
}
