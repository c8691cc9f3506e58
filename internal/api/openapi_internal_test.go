package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes holds the OpenAPI document and the route table together: every route
// is documented with its method, and nothing documented is missing from the routes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	var routed []string
	for _, r := range New(nil, slog.New(slog.NewTextHandler(io.Discard, nil))).routes() {
		routed = append(routed, r.pattern)
	}
	slices.Sort(documented)
	slices.Sort(routed)
	if !slices.Equal(documented, routed) {
		t.Fatalf("routes and OpenAPI paths differ:\nrouted:     %q\ndocumented: %q", routed, documented)
	}
}
