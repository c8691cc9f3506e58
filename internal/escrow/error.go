package escrow

import (
	"errors"
	"fmt"
)

// Code classifies an error. Adapters map codes to their own vocabulary (HTTP statuses, exit
// codes) through one table each.
type Code string

// The error codes.
const (
	CodeInvalid      Code = "invalid_request" // the input is malformed; Message names the field
	CodeUnauthorized Code = "unauthorized"    // no valid credentials
	CodeForbidden    Code = "forbidden"       // valid credentials, not allowed
	CodeNotFound     Code = "not_found"
	CodeConflict     Code = "conflict"
	CodeNotEncrypted Code = "not_encrypted" // rotation asked for a device with BitLocker off everywhere
	CodeTooLarge     Code = "too_large"
	CodeRateLimited  Code = "rate_limited"
	CodeUnavailable  Code = "unavailable" // storage failed; nothing was acknowledged
	CodeInternal     Code = "internal"
)

// Error is Keyward's error. Message is safe to show to the caller; Err is the cause, for logs
// only. Neither may ever carry key material, passwords or tokens.
type Error struct {
	Code    Code
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Message
	}
	if e.Message == "" {
		return e.Err.Error()
	}
	return e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message and no cause.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with code and message that keeps err as its logged cause.
func Wrap(code Code, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, or CodeInternal.
func ErrorCode(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the caller-safe message of the first *Error in err's chain, or a generic
// one: the text of other errors is for logs only.
func ErrorMessage(err error) string {
	if e, ok := errors.AsType[*Error](err); ok && e.Message != "" {
		return e.Message
	}
	return "internal error"
}
