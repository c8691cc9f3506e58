package web

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/keyward/keyward/internal/escrow"
	"golang.org/x/oauth2"
)

// SSOConfig configures single sign-on with an OpenID Connect provider (Entra ID, Okta,
// Keycloak, Dex, ...), by the authorization code flow with PKCE.
type SSOConfig struct {
	Issuer       string // the provider's issuer URL; its discovery document is read from there
	ClientID     string
	ClientSecret string
	// RedirectURL is the callback registered at the provider; default PUBLIC_URL/signin/sso/callback.
	RedirectURL string
	// Scopes asked for; default openid, email, profile, groups (the default role claim: without
	// it most providers send no groups, and every role would stay as it is).
	Scopes []string
	// RoleClaim is the ID token claim that decides the role (default "groups"): a string or a
	// list of strings, each looked up in RoleMap.
	RoleClaim string
	// RoleMap maps claim values to roles. When several match, the most powerful role wins.
	RoleMap map[string]escrow.Role
	// DefaultRole is the role of a person none of whose claim values is in RoleMap; empty
	// refuses such a person. The usual choice is user: everyone may use self-service.
	DefaultRole escrow.Role
	// HTTPClient talks to the provider; nil: a client with a 10 s timeout.
	HTTPClient *http.Client
}

// ParseRoleMap reads "kw-admins=admin,kw-helpdesk=helpdesk" into a map of claim values to roles.
func ParseRoleMap(s string) (map[string]escrow.Role, error) {
	out := map[string]escrow.Role{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		value, role, ok := strings.Cut(part, "=")
		value, role = strings.TrimSpace(value), strings.TrimSpace(role)
		if !ok || value == "" || !escrow.Role(role).Valid() {
			return nil, fmt.Errorf("role map entry %q: must be CLAIM_VALUE=ROLE with ROLE one of admin, helpdesk, auditor, user", part)
		}
		out[value] = escrow.Role(role)
	}
	return out, nil
}

// rolePower orders roles from least to most powerful, to pick one when several claims match.
var rolePower = map[escrow.Role]int{escrow.RoleUser: 1, escrow.RoleAuditor: 2, escrow.RoleHelpdesk: 3, escrow.RoleAdmin: 4}

// roleFor picks the role for the values of the role claim: the most powerful mapped one, else
// the default ("" when there is none: the person may not sign in). The caller tells a token
// without the claim apart: it keeps an existing person's role.
func (c SSOConfig) roleFor(claim any) escrow.Role {
	var values []string
	switch v := claim.(type) {
	case string:
		values = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				values = append(values, s)
			}
		}
	}
	best := c.DefaultRole
	for _, v := range values {
		if r, ok := c.RoleMap[v]; ok && rolePower[r] > rolePower[best] {
			best = r
		}
	}
	return best
}

// ssoClient talks to the provider. Discovery happens at the first sign-in, not at start-up,
// so that a provider that is down does not keep the server (and the API, and local sign-in)
// from starting; a failed discovery is tried again at the next sign-in.
type ssoClient struct {
	cfg    SSOConfig
	client *http.Client

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

func newSSOClient(cfg SSOConfig, publicURL string) (*ssoClient, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, fmt.Errorf("single sign-on needs an issuer URL and a client ID")
	}
	// Plain http only to a provider on this machine: over a network, http would let anyone on
	// the path swap the provider's signing keys.
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Host == "" || !(u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())) {
		return nil, fmt.Errorf("single sign-on issuer %q: must be an https:// URL", cfg.Issuer)
	}
	if cfg.RedirectURL == "" {
		if publicURL == "" {
			return nil, fmt.Errorf("single sign-on needs a redirect URL, or the public URL to build it from")
		}
		cfg.RedirectURL = strings.TrimSuffix(publicURL, "/") + "/signin/sso/callback"
	}
	if u, err := url.Parse(cfg.RedirectURL); err != nil || u.Host == "" || u.Path != "/signin/sso/callback" {
		return nil, fmt.Errorf("single sign-on redirect URL %q: must be an absolute URL ending in /signin/sso/callback", cfg.RedirectURL)
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = "groups"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "email", "profile", "groups"}
	}
	if cfg.DefaultRole != "" && !cfg.DefaultRole.Valid() {
		return nil, fmt.Errorf("single sign-on default role %q: must be admin, helpdesk, auditor, user or none", cfg.DefaultRole)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &ssoClient{cfg: cfg, client: client}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// provider returns the OAuth 2 configuration and the ID token verifier, discovering the
// provider on first use.
func (c *ssoClient) provider(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.oauth != nil {
		return c.oauth, c.verifier, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, c.client), 15*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, c.cfg.Issuer)
	if err != nil {
		return nil, nil, escrow.Wrap(escrow.CodeUnavailable, err, "Single sign-on is unavailable: the identity provider did not answer. Try again, or sign in with a password.")
	}
	c.oauth = &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, RedirectURL: c.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: c.cfg.Scopes}
	c.verifier = p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID})
	return c.oauth, c.verifier, nil
}

// context returns ctx carrying the client that talks to the provider.
func (c *ssoClient) context(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, c.client)
}
