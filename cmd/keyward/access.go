package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// The commands that show and take away access: people, API tokens and enrollment tokens. They
// print tab-separated columns with a header, and never a token's secret.

func usersList(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("users list")
	return onStore(ctx, fs, args, env, nil, func(db *store.DB) error {
		users, err := db.ListUsers(ctx)
		if err != nil {
			return exitError{1, "users list: " + escrow.ErrorMessage(err)}
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tSTATE\tCREATED")
		for _, u := range users {
			state := "enabled"
			if u.Disabled() {
				state = "disabled " + u.DisabledAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Role, state, u.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

// usersSetDisabled is "users disable" and "users enable".
func usersSetDisabled(ctx context.Context, args []string, env cliEnv, disable bool) error {
	name := "users enable"
	if disable {
		name = "users disable"
	}
	fs := newFlags(name)
	email := fs.String("email", "", "the user's sign-in name")
	check := func() error {
		if *email == "" {
			return exitError{2, name + ": give --email"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		u, _, err := db.UserCredentials(ctx, *email)
		if err == nil {
			u, err = db.UpdateUser(ctx, cliOrigin(), u.ID, escrow.UserChange{Disabled: &disable})
		}
		if err != nil {
			return exitError{1, name + ": " + escrow.ErrorMessage(err)}
		}
		state := "enabled"
		if u.Disabled() {
			state = "disabled"
		}
		fmt.Fprintf(env.stdout, "%s\t%s\t%s\n", u.ID, u.Email, state)
		return nil
	})
}

// usersSetRole is "users set-role": the way back when nobody can change roles in the portal
// (the last admin demoted by a misconfigured identity provider, say). The last enabled admin
// keeps the role, as everywhere (store.UpdateUser).
func usersSetRole(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("users set-role")
	email := fs.String("email", "", "the user's sign-in name")
	role := fs.String("role", "", "admin, helpdesk, auditor or user")
	check := func() error {
		if *email == "" || !escrow.Role(*role).Valid() {
			return exitError{2, "users set-role: give --email and --role admin|helpdesk|auditor|user"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		r := escrow.Role(*role)
		u, _, err := db.UserCredentials(ctx, *email)
		if err == nil {
			u, err = db.UpdateUser(ctx, cliOrigin(), u.ID, escrow.UserChange{Role: &r})
		}
		if err != nil {
			return exitError{1, "users set-role: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "%s\t%s\t%s\n", u.ID, u.Email, u.Role)
		return nil
	})
}

// usersLinkSSO is "users link-sso": a person with a local password is never linked to a
// single sign-on identity by their email alone; this lets their next sign-on with a verified
// email link them, and that sign-on removes the password.
func usersLinkSSO(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("users link-sso")
	email := fs.String("email", "", "the user's sign-in name")
	check := func() error {
		if *email == "" {
			return exitError{2, "users link-sso: give --email"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		u, err := db.AllowSSOLink(ctx, cliOrigin(), *email)
		if err != nil {
			return exitError{1, "users link-sso: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "%s\t%s\tlinked at the next single sign-on with a verified email; its password is removed then\n", u.ID, u.Email)
		return nil
	})
}

func tokensList(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("tokens list")
	email := fs.String("user", "", "only this user's tokens (email)")
	return onStore(ctx, fs, args, env, nil, func(db *store.DB) error {
		tokens, err := db.ListAPITokens(ctx, *email)
		if err != nil {
			return exitError{1, "tokens list: " + escrow.ErrorMessage(err)}
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tNAME\tCREATED\tLAST USED\tREVOKED")
		for _, t := range tokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.UserEmail, strconv.Quote(t.Name), t.CreatedAt.Format(time.RFC3339), orDash(t.LastUsedAt), orDash(t.RevokedAt))
		}
		return tw.Flush()
	})
}

func orDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// revokeCmd is "tokens revoke" and "enroll-tokens revoke": both take the token's ID, never the
// token itself, so the secret stays out of shell histories and process lists.
func revokeCmd(ctx context.Context, name string, args []string, env cliEnv, revoke func(ctx context.Context, db *store.DB, id string) error) error {
	fs := newFlags(name)
	id := fs.String("id", "", "the token's ID (the 16 hex digits after kwt_ or kwe_, as the list shows)")
	var tokenID string
	check := func() error {
		var ok bool
		if tokenID, ok = escrow.ParseTokenID(*id); !ok {
			return exitError{2, name + ": --id must be a token ID: 16 hex digits"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		if err := revoke(ctx, db, tokenID); err != nil {
			return exitError{1, name + ": " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "revoked %s\n", tokenID)
		return nil
	})
}

func tokensRevoke(ctx context.Context, args []string, env cliEnv) error {
	return revokeCmd(ctx, "tokens revoke", args, env, func(ctx context.Context, db *store.DB, id string) error {
		return db.RevokeAPIToken(ctx, cliOrigin(), id, "")
	})
}

func enrollTokensRevoke(ctx context.Context, args []string, env cliEnv) error {
	return revokeCmd(ctx, "enroll-tokens revoke", args, env, func(ctx context.Context, db *store.DB, id string) error {
		return db.RevokeEnrollmentToken(ctx, cliOrigin(), id)
	})
}

func enrollTokensList(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("enroll-tokens list")
	return onStore(ctx, fs, args, env, nil, func(db *store.DB) error {
		tokens, err := db.ListEnrollmentTokens(ctx)
		if err != nil {
			return exitError{1, "enroll-tokens list: " + escrow.ErrorMessage(err)}
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSES LEFT\tEXPIRES\tCREATED BY\tCREATED\tREVOKED")
		for _, t := range tokens {
			uses := "unlimited"
			if t.UsesLeft != nil {
				uses = strconv.FormatInt(*t.UsesLeft, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, uses, orDash(t.ExpiresAt), t.CreatedBy, t.CreatedAt.Format(time.RFC3339), orDash(t.RevokedAt))
		}
		return tw.Flush()
	})
}
