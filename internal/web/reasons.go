package web

import (
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// reason is one of the standard reasons for needing a recovery key (SPEC §5): the times
// BitLocker asks for it.
type reason struct {
	Code  string
	Label string
}

var standardReasons = []reason{
	{"firmware", "BIOS/UEFI firmware update"},
	{"hardware", "Hardware change (motherboard, TPM)"},
	{"pin-attempts", "Too many incorrect PIN attempts"},
	{"secure-boot", "Secure Boot configuration change"},
	{"forgotten-pin", "Forgotten PIN"},
	{"drive-moved", "Drive moved to another computer"},
	{"other", "Other"},
}

// maxReason is the longest reason kept in the audit trail, as in the API.
const maxReason = 500

// formReason reads the reason a form gives: one of the standard reasons and optional details,
// or "other" with details required. Errors: CodeInvalid with a message for the form.
func formReason(r *http.Request) (string, error) {
	code := r.PostForm.Get("reason")
	details := strings.TrimSpace(r.PostForm.Get("details"))
	if err := escrow.CheckText("details", details, false, maxReason-64); err != nil {
		return "", escrow.Errorf(escrow.CodeInvalid, "The details are too long or contain characters that cannot be kept (at most %d characters).", maxReason-64)
	}
	for _, rs := range standardReasons {
		if rs.Code != code {
			continue
		}
		if code == "other" {
			if details == "" {
				return "", escrow.Errorf(escrow.CodeInvalid, "Say why the recovery key is needed: with \"Other\", the details are required.")
			}
			return details, nil
		}
		if details != "" {
			return rs.Label + ": " + details, nil
		}
		return rs.Label, nil
	}
	return "", escrow.Errorf(escrow.CodeInvalid, "Choose why the recovery key is needed.")
}
