package web

import (
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

type usersData struct {
	layout
	Users []escrow.User
	Roles []escrow.Role
	// The add form, kept when it comes back with an error.
	Email, Role, Tags string
	Error             string
	SSO               bool
}

var allRoles = []escrow.Role{escrow.RoleAdmin, escrow.RoleHelpdesk, escrow.RoleAuditor, escrow.RoleUser}

// userList serves GET /users (admins): everyone who may sign in, their roles, and the forms to
// add a person and to change a role.
func (s *Server) userList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionUserCreate, ""); err != nil {
		return err
	}
	d := &usersData{Role: string(escrow.RoleUser)}
	d.Notice = notice(r)
	return s.renderUsers(w, r, http.StatusOK, d)
}

func (s *Server) renderUsers(w http.ResponseWriter, r *http.Request, status int, d *usersData) error {
	users, err := s.store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	d.Users, d.Roles, d.SSO = users, allRoles, s.sso != nil
	return s.render(w, r, status, viewUsers, "Users and roles", "users", d)
}

// formTags reads a comma-separated list of scope tags.
func formTags(s string) []string {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
