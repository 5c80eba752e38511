package facade

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// problem is an error the facade answers with an OperationOutcome: an HTTP
// status, a FHIR issue type, and a message that names the parameter or
// field and the rule, never a value the caller sent.
type problem struct {
	status int
	code   string // FHIR IssueType: invalid, not-found, forbidden, …
	msg    string
	// expression names the element or parameter at fault, when known.
	expression string
}

func (p *problem) Error() string { return p.msg }

func badRequest(expression, msg string) *problem {
	return &problem{status: http.StatusBadRequest, code: "invalid", msg: msg, expression: expression}
}

func notFound(expression, msg string) *problem {
	return &problem{status: http.StatusNotFound, code: "not-found", msg: msg, expression: expression}
}

func forbidden(msg string) *problem {
	return &problem{status: http.StatusForbidden, code: "forbidden", msg: msg}
}

// operationOutcome is a FHIR R4 OperationOutcome.
type operationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []issue `json:"issue"`
}

type issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

func outcome(issues ...issue) *operationOutcome {
	return &operationOutcome{ResourceType: "OperationOutcome", Issue: issues}
}

// grpcProblems maps the network's status codes to HTTP, in one ordered
// table. The network's messages name fields and rules only, so they pass
// through.
var grpcProblems = []struct {
	code   codes.Code
	status int
	issue  string
}{
	{codes.InvalidArgument, http.StatusBadRequest, "invalid"},
	{codes.OutOfRange, http.StatusBadRequest, "invalid"},
	{codes.Unauthenticated, http.StatusUnauthorized, "login"},
	{codes.PermissionDenied, http.StatusForbidden, "forbidden"},
	{codes.NotFound, http.StatusNotFound, "not-found"},
	{codes.FailedPrecondition, http.StatusUnprocessableEntity, "business-rule"},
	{codes.Aborted, http.StatusConflict, "conflict"},
	{codes.ResourceExhausted, http.StatusTooManyRequests, "throttled"},
	{codes.DeadlineExceeded, http.StatusGatewayTimeout, "timeout"},
	{codes.Canceled, 499, "timeout"},
	{codes.Unavailable, http.StatusServiceUnavailable, "transient"},
	{codes.DataLoss, http.StatusBadGateway, "exception"},
}

// networkProblem turns an error of a call to the network into a problem.
func networkProblem(ctx context.Context, err error) *problem {
	var p *problem
	if errors.As(err, &p) {
		return p
	}
	if ctx.Err() == context.DeadlineExceeded {
		return &problem{status: http.StatusGatewayTimeout, code: "timeout", msg: "the network did not answer in time"}
	}
	st, _ := status.FromError(err)
	for _, m := range grpcProblems {
		if st.Code() == m.code {
			return &problem{status: m.status, code: m.issue, msg: st.Message()}
		}
	}
	return &problem{status: http.StatusBadGateway, code: "exception", msg: "the network failed: " + st.Code().String()}
}

// writeJSON answers with a FHIR resource.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding the answer failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", fhirJSON)
	w.WriteHeader(status)
	w.Write(b)
}

// writeProblem answers with an OperationOutcome.
func writeProblem(w http.ResponseWriter, p *problem) {
	is := issue{Severity: "error", Code: p.code, Diagnostics: p.msg}
	if p.expression != "" {
		is.Expression = []string{p.expression}
	}
	if p.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	writeJSON(w, p.status, outcome(is))
}

const fhirJSON = "application/fhir+json; charset=utf-8"
