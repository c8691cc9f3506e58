package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// setupLinkTTL is how long a setup link works.
const setupLinkTTL = time.Hour

// setupLink makes a one-time setup link on base (the portal's public URL, or the address the
// server listens on).
func setupLink(ctx context.Context, db *store.DB, o escrow.Origin, base string) (string, error) {
	token, err := db.CreateSetupLink(ctx, o, setupLinkTTL)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(base, "/") + "/setup?token=" + token, nil
}

// linkBase is where people reach a server listening on addr: publicURL when set, else the
// listen address, with a wildcard host (all interfaces) shown as this machine.
func linkBase(publicURL, scheme, addr string) string {
	if publicURL != "" {
		return publicURL
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return scheme + "://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return (&url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}).String()
}

// announceSetup prints the setup link when the installation has no admin yet: the one line,
// on standard error, in which the token ever appears.
func (s *Server) announceSetup(ctx context.Context) error {
	need, err := s.db.NeedsSetup(ctx)
	if err != nil || !need {
		return err
	}
	o := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "serve", Name: "keyward serve"}, Source: escrow.SourceSystem}
	scheme := "http"
	if s.TLSCert != "" {
		scheme = "https"
	}
	link, err := setupLink(ctx, s.db, o, linkBase(s.PublicURL, scheme, s.Addr()))
	if escrow.ErrorCode(err) == escrow.CodeConflict {
		return nil // an admin was made meanwhile (keyward users add): no link is needed
	}
	if err != nil {
		return err
	}
	s.Log.Warn("Keyward has no admin yet: open the setup link to create the first one (it works once, for an hour; \"keyward setup-link\" prints a new one)",
		slog.String("setupLink", link))
	return nil
}

// setupLinkCmd prints a new setup link, while the installation has no admin.
func setupLinkCmd(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("setup-link")
	publicURL := fs.String("public-url", "", "URL people reach the portal at")
	listen := fs.String("listen", "127.0.0.1:8080", "the server's listen address, for the link when there is no --public-url")
	return onStore(ctx, fs, args, env, nil, func(db *store.DB) error {
		link, err := setupLink(ctx, db, cliOrigin(), linkBase(*publicURL, "http", *listen))
		if escrow.ErrorCode(err) == escrow.CodeConflict {
			return exitError{1, "setup-link: " + escrow.ErrorMessage(err)}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(env.stdout, link)
		return nil
	})
}
