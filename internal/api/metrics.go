package api

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// metricsGet serves GET /metrics: the Prometheus metrics, to admins and auditors only. They
// hold counts, never key material or IDs, but a monitoring account should get a role that
// cannot read keys, and nothing about the fleet is public.
//
// Scrapes are not audited: SPEC §6 does not list them, they disclose nothing about any one
// device or key, and a scrape every 15 seconds would bury the events that matter. A refused
// scrape is audited like any refused request (a bad token, a role that may not).
func (s *Server) metricsGet(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, principal(r).CanReadMetrics(), escrow.ActionMetricsRead, ""); err != nil {
		return err
	}
	if s.metrics == nil {
		return escrow.Errorf(escrow.CodeNotFound, "metrics are off")
	}
	s.metrics.Handler().ServeHTTP(w, r)
	return nil
}
