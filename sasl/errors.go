package sasl

import "errors"

// Errors returned by this package. Each one maps to an RFC 6120 section 6.5
// failure condition through [Condition]; errors returned by the package wrap
// one of these with %w, so test them with errors.Is.
var (
	// ErrMalformed reports a client message that does not follow the
	// mechanism's syntax: missing, repeated or misplaced attributes, bad
	// escapes, a wrong nonce, a proof of the wrong length.
	ErrMalformed = errors.New("sasl: malformed request")

	// ErrIncorrectEncoding reports base64 that does not decode. The caller
	// returns it when the XMPP element's content is not valid base64; the
	// package returns it for the base64 inside SCRAM's c= and p=.
	ErrIncorrectEncoding = errors.New("sasl: incorrect base64 encoding")

	// ErrNotAuthorized reports a wrong password or proof, or an unknown
	// account: the two are deliberately indistinguishable. It is the only
	// error returned after a credential was checked; see
	// [CheckedCredential].
	ErrNotAuthorized = errors.New("sasl: not authorized")

	// ErrInvalidMechanism reports a mechanism name this package does not
	// implement, or a -PLUS mechanism on a connection without TLS.
	ErrInvalidMechanism = errors.New("sasl: invalid mechanism")

	// ErrInvalidAuthzid reports an authorization identity the account may
	// not act as. The package only parses the authzid; the caller checks it
	// and returns this error.
	ErrInvalidAuthzid = errors.New("sasl: invalid authzid")

	// ErrMandatoryExtension reports a SCRAM m= attribute: RFC 5802 section
	// 5.1 requires the exchange to fail when it is present.
	ErrMandatoryExtension = errors.New("sasl: unsupported mandatory extension")

	// ErrChannelBinding reports a client-final c= attribute that does not
	// match the gs2 header of the client-first message and this
	// connection's channel-binding data.
	ErrChannelBinding = errors.New("sasl: channel binding mismatch")

	// ErrBindingType reports a channel-binding type that this package or
	// this connection cannot provide.
	ErrBindingType = errors.New("sasl: unsupported channel binding type")

	// ErrBindingFlag reports a gs2 channel-binding flag that contradicts the
	// mechanism: 'p' with a mechanism without -PLUS, or no 'p' with one.
	ErrBindingFlag = errors.New("sasl: channel binding flag does not match mechanism")

	// ErrDowngrade reports the gs2 flag 'y' (client supports channel
	// binding but believes the server does not) on a stream where the
	// server did offer -PLUS mechanisms: someone removed them in transit.
	ErrDowngrade = errors.New("sasl: channel binding downgrade detected")

	// ErrState reports a method called out of order, or after the exchange
	// ended.
	ErrState = errors.New("sasl: call out of order")

	// ErrInvalidCredential reports a stored credential that cannot be used
	// or parsed: wrong key length, no salt, bad iteration count.
	ErrInvalidCredential = errors.New("sasl: invalid stored credential")

	// ErrInvalidPassword reports a password that cannot be stored: empty or
	// not valid UTF-8.
	ErrInvalidPassword = errors.New("sasl: invalid password")

	// ErrAborted is for the caller to return when the client sends <abort/>.
	ErrAborted = errors.New("sasl: aborted by client")

	// ErrMechanismTooWeak is for the caller to return when policy refuses a
	// mechanism, such as PLAIN on a connection without TLS.
	ErrMechanismTooWeak = errors.New("sasl: mechanism too weak")

	// ErrCredentialsExpired is for the caller to return when the account's
	// password has expired.
	ErrCredentialsExpired = errors.New("sasl: credentials expired")

	// ErrAccountDisabled is for the caller to return when the account
	// exists but is disabled.
	ErrAccountDisabled = errors.New("sasl: account disabled")

	// ErrEncryptionRequired is for the caller to return when the mechanism
	// may only be used over an encrypted connection.
	ErrEncryptionRequired = errors.New("sasl: encryption required")
)

// RFC 6120 section 6.5 failure conditions, as returned by [Condition].
const (
	CondAborted              = "aborted"
	CondAccountDisabled      = "account-disabled"
	CondCredentialsExpired   = "credentials-expired"
	CondEncryptionRequired   = "encryption-required"
	CondIncorrectEncoding    = "incorrect-encoding"
	CondInvalidAuthzid       = "invalid-authzid"
	CondInvalidMechanism     = "invalid-mechanism"
	CondMalformedRequest     = "malformed-request"
	CondMechanismTooWeak     = "mechanism-too-weak"
	CondNotAuthorized        = "not-authorized"
	CondTemporaryAuthFailure = "temporary-auth-failure"
)

// conditions is checked in order: the first sentinel err wraps wins.
var conditions = [...]struct {
	err  error
	cond string
}{
	{ErrNotAuthorized, CondNotAuthorized},
	// A binding mismatch or downgrade may be an attacker in the middle:
	// report it like a wrong password, as RFC 5802 treats it as an
	// authentication failure.
	{ErrChannelBinding, CondNotAuthorized},
	{ErrDowngrade, CondNotAuthorized},
	{ErrMalformed, CondMalformedRequest},
	{ErrMandatoryExtension, CondMalformedRequest},
	{ErrBindingType, CondMalformedRequest},
	{ErrBindingFlag, CondMalformedRequest},
	{ErrState, CondMalformedRequest},
	{ErrIncorrectEncoding, CondIncorrectEncoding},
	{ErrInvalidMechanism, CondInvalidMechanism},
	{ErrInvalidAuthzid, CondInvalidAuthzid},
	{ErrAborted, CondAborted},
	{ErrMechanismTooWeak, CondMechanismTooWeak},
	{ErrCredentialsExpired, CondCredentialsExpired},
	{ErrAccountDisabled, CondAccountDisabled},
	{ErrEncryptionRequired, CondEncryptionRequired},
}

// Condition returns the RFC 6120 section 6.5 failure condition for err: the
// name of the child element of <failure/>. It returns "" for a nil error and
// "temporary-auth-failure" for errors that are not the client's fault, such
// as a storage error or an unusable stored credential.
func Condition(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range conditions {
		if errors.Is(err, c.err) {
			return c.cond
		}
	}
	return CondTemporaryAuthFailure
}

// CheckedCredential reports whether err ended an exchange after a password or
// proof was compared with a stored credential: a wrong password, a wrong
// proof, or an unknown account (which runs the same comparison against a fake
// credential). These are the failures that matter for password guessing, so
// a caller limits them tightly, per connection and per address.
//
// Every other failure happened before any comparison and tells the client
// nothing about a password: malformed messages, an unsupported
// channel-binding type (a client binding tls-unique on TLS 1.3), a binding
// flag that contradicts the mechanism, the downgrade flag 'y', channel-binding
// data that does not match (checked before the proof), a mandatory
// extension, calls out of order, an unusable stored credential. A caller
// counts those separately, with a looser limit, so a client that tries
// mechanisms in turn reaches one that works.
func CheckedCredential(err error) bool { return errors.Is(err, ErrNotAuthorized) }
