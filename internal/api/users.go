package api

import (
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

type userJSON struct {
	ID         string     `json:"id"`
	Email      string     `json:"email"`
	Role       string     `json:"role"`
	ScopeTags  []string   `json:"scopeTags"`
	CreatedAt  time.Time  `json:"createdAt"`
	Disabled   bool       `json:"disabled"`
	DisabledAt *time.Time `json:"disabledAt"`
}

func toUserJSON(u escrow.User) userJSON {
	tags := u.ScopeTags
	if tags == nil {
		tags = []string{}
	}
	return userJSON{ID: u.ID, Email: u.Email, Role: string(u.Role), ScopeTags: tags, CreatedAt: u.CreatedAt,
		Disabled: u.Disabled(), DisabledAt: timeOrNull(u.DisabledAt)}
}

// usersList serves GET /api/users (admin): everyone who may sign in or hold tokens.
func (s *Server) usersList(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, principal(r).CanAdminister(), escrow.ActionUserRead, ""); err != nil {
		return err
	}
	if err := newQuery(r).err; err != nil {
		return err
	}
	users, err := s.store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	out := listJSON[userJSON]{Items: make([]userJSON, 0, len(users))}
	for _, u := range users {
		out.Items = append(out.Items, toUserJSON(u))
	}
	return writeJSON(w, http.StatusOK, out)
}

type userCreateRequest struct {
	Email     string   `json:"email"`
	Role      string   `json:"role"`
	ScopeTags []string `json:"scopeTags"`
}

// usersCreate serves POST /api/users (admin). No password travels through the API: a person
// signs in through single sign-on, holds API tokens, or gets a password from the command line.
func (s *Server) usersCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionUserCreate, ""); err != nil {
		return err
	}
	var req userCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := checkTags(req.ScopeTags); err != nil {
		return err
	}
	u, err := s.store.CreateUser(r.Context(), origin(r, p), escrow.NewUser{Email: req.Email, Role: escrow.Role(req.Role), ScopeTags: req.ScopeTags})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, toUserJSON(u))
}

type userChangeRequest struct {
	Role      *string   `json:"role"`
	ScopeTags *[]string `json:"scopeTags"`
	Disabled  *bool     `json:"disabled"`
}

// usersUpdate serves PATCH /api/users/{userId} (admin): any of role, scopeTags and disabled.
// Disabling ends the person's sessions and refuses their tokens and sign-ins until they are
// enabled; nobody can disable or demote themself or the last enabled admin (409).
func (s *Server) usersUpdate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := parseDeviceID(r.PathValue("userId"))
	if err != nil {
		return escrow.Errorf(escrow.CodeNotFound, "user: no such user")
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionUserRole, ""); err != nil {
		return err
	}
	var req userChangeRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	ch := escrow.UserChange{ScopeTags: req.ScopeTags, Disabled: req.Disabled}
	if req.Role != nil {
		role := escrow.Role(*req.Role)
		ch.Role = &role
	}
	if req.ScopeTags != nil {
		if err := checkTags(*req.ScopeTags); err != nil {
			return err
		}
	}
	if ch.Role == nil && ch.ScopeTags == nil && ch.Disabled == nil {
		return escrow.Errorf(escrow.CodeInvalid, "body: give role, scopeTags or disabled")
	}
	u, err := s.store.UpdateUser(r.Context(), origin(r, p), id, ch)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toUserJSON(u))
}

// checkTags refuses scope tags that are empty, too long or not plain text.
func checkTags(tags []string) error {
	if len(tags) > 100 {
		return escrow.Errorf(escrow.CodeInvalid, "scopeTags: at most 100 tags")
	}
	for _, t := range tags {
		if err := escrow.CheckText("scopeTags", t, true, 64); err != nil {
			return err
		}
	}
	return nil
}
