package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// maxBody is the largest request body accepted. The biggest honest body, a report of a device
// with many volumes, is a few kilobytes.
const maxBody = 64 << 10

// decodeJSON reads a JSON object into v, refusing unknown fields, trailing
// data and bodies over maxBody. An empty body is allowed when emptyOK.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if emptyOK && r.ContentLength == 0 {
		return nil
	}
	// The Content-Type is not checked: the body must be JSON whatever it claims (curl -d labels
	// JSON as a form), and a cross-site form post cannot carry the bearer token every route
	// other than enrollment needs.
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && emptyOK {
			return nil
		}
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyError(err)
		}
		return escrow.Errorf(escrow.CodeInvalid, "body: unexpected data after the JSON object")
	}
	return nil
}

// bodyError explains a decoding failure in terms of the request's fields. The decoder's own
// messages can quote the input, which may be key material, so they are never passed on.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return escrow.Errorf(escrow.CodeTooLarge, "body: larger than %d bytes", maxBody)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return escrow.Errorf(escrow.CodeInvalid, "%s: must be %s", field, jsonKind(typ.Type.Kind().String()))
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return escrow.Errorf(escrow.CodeInvalid, "body: not a valid JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return escrow.Errorf(escrow.CodeInvalid, "%s: unknown field", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
	}
	return escrow.Errorf(escrow.CodeInvalid, "body: not a valid JSON object")
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a number"
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	if err != nil {
		return errAborted
	}
	return nil
}
