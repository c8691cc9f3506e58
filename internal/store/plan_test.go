package store_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// seedFleet enrolls n devices through the store, shaped like a real fleet: most escrowed, one
// in five with an escrowed data drive, and some failed, missing escrow, pending (enrolled, not
// reported) or with BitLocker off; owners have three devices each; every device is tagged with
// one of ten sites and every third one also "lab". It returns the enrolled devices.
func seedFleet(tb testing.TB, e *env, n int) []escrow.Enrolled {
	tb.Helper()
	tok, err := e.db.CreateEnrollmentToken(e.ctx, adminOrigin, 0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var out []escrow.Enrolled
	raw := e.raw()
	for i := range n {
		en, err := e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token, escrow.Enrollment{
			Hostname: fmt.Sprintf("LT-%06d", i), SerialNumber: fmt.Sprintf("SN%06d", i), OSVersion: "10.0.26100",
			OwnerUPN: fmt.Sprintf("user%d@example.com", i/3)})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, en)
		// No service sets tags yet; the rows are what one would write.
		tags := []string{fmt.Sprintf("site-%d", i%10)}
		if i%3 == 0 {
			tags = append(tags, "lab")
		}
		for _, tag := range tags {
			if _, err := raw.ExecContext(e.ctx, `INSERT INTO device_tags (device_id, tag) VALUES ($1, $2)`, en.DeviceID, tag); err != nil {
				tb.Fatal(err)
			}
		}
		o := deviceOrigin(en)
		kind := i % 20
		if kind == 19 {
			continue // enrolled, not reported yet: pending
		}
		os, data := genSample(2*i), genSample(2*i+1)
		var r escrow.Report
		if kind == 18 {
			r.Volumes = []escrow.ReportedVolume{offVolume(osVolume)} // BitLocker off
		} else {
			if kind != 17 { // 17: on, never escrowed: missing escrow
				if _, err := e.db.Escrow(e.ctx, o, en.DeviceID, passwordRequest(osVolume, os)); err != nil {
					tb.Fatal(err)
				}
			}
			v := onVolume(osVolume, os.keyID)
			v.Fingerprints = map[string]string{os.keyID: fingerprint(en.VerificationKey, os.password)}
			r.Volumes = append(r.Volumes, v)
			if i%5 == 0 {
				req := passwordRequest(dataVolume, data)
				req.MountPoint, req.VolumeType = "D:", escrow.VolumeFixedData
				if _, err := e.db.Escrow(e.ctx, o, en.DeviceID, req); err != nil {
					tb.Fatal(err)
				}
				dv := onVolume(dataVolume, data.keyID)
				dv.MountPoint, dv.Type = "D:", escrow.VolumeFixedData
				r.Volumes = append(r.Volumes, dv)
			}
			if kind == 16 {
				r.Events = []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume, Message: "TPM error"}}
			}
		}
		if _, err := e.db.ApplyReport(e.ctx, o, en.DeviceID, r); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// watched are the tables whose full scan costs the fleet.
var watched = []string{"devices", "device_tags", "volumes", "protectors", "recovery_keys", "rotations", "audit_events", "users", "approvals"}

// TestQueryPlans runs every statement the store sends while serving requests (and running its
// jobs) against a seeded database through EXPLAIN QUERY PLAN (SQLite, with the statistics
// PRAGMA optimize gathers at start) or EXPLAIN (PostgreSQL, analyzed, with sequential scans
// priced out, so that a plan without an index for a filter shows as one), and fails on a full
// scan of a table that grows with the fleet. The one scan allowed is the walk of an index in
// the order of a page (ORDER BY ... LIMIT, no sort), which the limit stops, and on SQLite only
// if nothing but the page's position filters what it walks.
func TestQueryPlans(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds a fleet")
	}
	var mu sync.Mutex
	recording := false
	seen := map[string]store.Statement{}
	stop := store.TraceStatements(func(s store.Statement) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := seen[s.Query]; recording && !ok {
			seen[s.Query] = s
		}
	})
	e := newEnv(t)
	stop()
	devices := seedFleet(t, e, 300)
	// The server's start, on the seeded database: statistics for SQLite's planner.
	stop = store.TraceStatements(func(s store.Statement) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := seen[s.Query]; recording && !ok {
			seen[s.Query] = s
		}
	})
	db := e.open()
	stop()
	e.db = db
	mu.Lock()
	recording = true
	mu.Unlock()

	exerciseRequestPaths(t, e, devices)

	mu.Lock()
	recording = false
	statements := make([]store.Statement, 0, len(seen))
	for _, s := range seen {
		if len(s.Args) > 0 || !strings.Contains(s.Query, ";") {
			statements = append(statements, s)
			continue
		}
		// Several statements in one round trip (the write path's savepoints on PostgreSQL):
		// each is planned on its own.
		for part := range strings.SplitSeq(s.Query, ";") {
			if part = strings.TrimSpace(part); part != "" {
				statements = append(statements, store.Statement{Query: part})
			}
		}
	}
	mu.Unlock()
	slices.SortFunc(statements, func(a, b store.Statement) int { return strings.Compare(a.Query, b.Query) })
	if len(statements) < 40 {
		t.Fatalf("recorded %d statements; the tracing is not seeing the store", len(statements))
	}
	raw := e.raw()
	if onPostgres() {
		// What autovacuum gives a live database; then plans without an index for a filter
		// show as sequential scans, however small the seeded tables.
		e.exec(raw, `ANALYZE`)
		e.exec(raw, `SET enable_seqscan = off`)
	}
	checked := 0
	for _, s := range statements {
		if skipPlan(s.Query) {
			continue
		}
		checked++
		var problems []string
		if onPostgres() {
			problems = postgresScans(t, e, raw, s)
		} else {
			problems = sqliteScans(t, e, raw, s)
		}
		for _, p := range problems {
			t.Errorf("%s\n  in: %s", p, oneLine(s.Query))
		}
	}
	t.Logf("%d statements, %d plans checked", len(statements), checked)
}

// exerciseRequestPaths calls every store service a request can reach, with every filter.
func exerciseRequestPaths(t *testing.T, e *env, devices []escrow.Enrolled) {
	t.Helper()
	ctx := e.ctx
	must := func(what string, err error) {
		t.Helper()
		if err != nil && escrow.ErrorCode(err) == escrow.CodeUnavailable {
			t.Fatalf("%s: %v", what, err)
		}
	}
	lab := escrow.Scope{Tags: []string{"lab"}}
	owner := escrow.Scope{OwnerUPN: "user7@example.com"}
	d0, d1 := devices[0], devices[1]
	for _, scope := range []escrow.Scope{allScope, lab, owner} {
		for _, st := range []escrow.EscrowStatus{"", escrow.StatusEscrowed, escrow.StatusPending, escrow.StatusFailed, escrow.StatusNotAvailable} {
			page, next, err := e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: scope, EscrowStatus: st, Limit: 5})
			must("ListDevices", err)
			if next != "" {
				_, _, err = e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: scope, EscrowStatus: st, Limit: 5, Cursor: next})
				must("ListDevices page 2", err)
			}
			_ = page
			for _, q := range []string{"lt-0001", "user3@", genSample(4).keyID[:8], genSample(4).keyID} {
				_, _, err := e.db.SearchDevices(ctx, adminOrigin, escrow.DeviceFilter{Scope: scope, EscrowStatus: st, Limit: 5}, q)
				must("SearchDevices", err)
			}
		}
		_, _, err := e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: scope, Retired: true})
		must("ListDevices retired", err)
		rep, err := e.db.StreamEscrowReport(ctx, scope, escrow.ReportPage{Limit: 5}, nil, func(escrow.ReportProblem) error { return nil })
		must("report", err)
		if rep.NextCursor != "" {
			_, err = e.db.StreamEscrowReport(ctx, scope, escrow.ReportPage{Limit: 5, Cursor: rep.NextCursor}, nil, func(escrow.ReportProblem) error { return nil })
			must("report page 2", err)
		}
		for _, f := range []escrow.KeyFilter{
			{}, {DeviceID: d0.DeviceID}, {KeyIDPrefix: genSample(0).keyID[:8]}, {KeyIDPrefix: genSample(0).keyID},
			{VolumeType: escrow.VolumeFixedData}, {Status: escrow.KeySuperseded}, {EscrowStatus: escrow.StatusFailed},
			{EscrowStatus: escrow.StatusPending},
		} {
			f.Scope, f.Limit = scope, 5
			_, next, err := e.db.ListKeys(ctx, adminOrigin, f)
			must("ListKeys", err)
			if next != "" {
				f.Cursor = next
				_, _, err = e.db.ListKeys(ctx, adminOrigin, f)
				must("ListKeys page 2", err)
			}
		}
	}
	_, err := e.db.Census(ctx)
	must("Census", err)
	_, err = e.db.GetDevice(ctx, adminPrincipal, d0.DeviceID)
	must("GetDevice", err)
	_, err = e.db.DeviceRotations(ctx, adminPrincipal, d0.DeviceID, 10)
	must("DeviceRotations", err)
	_, err = e.db.AuthenticateDevice(ctx, d0.DeviceToken)
	must("AuthenticateDevice", err)
	_, err = e.db.Disclose(ctx, adminOrigin, d0.DeviceID, asAdmin("test"), allowAll)
	must("Disclose", err)
	_, err = e.db.RequestRotation(ctx, adminOrigin, d1.DeviceID, "", asAdmin("test"), allowDevice)
	must("RequestRotation", err)
	cmds, err := e.db.Commands(ctx, deviceOrigin(d0), d0.DeviceID)
	must("Commands", err)
	s := genSample(900001)
	_, err = e.db.Escrow(ctx, deviceOrigin(d0), d0.DeviceID, passwordRequest(osVolume, s))
	must("Escrow", err)
	for _, c := range cmds {
		must("FinishCommand", e.db.FinishCommand(ctx, deviceOrigin(d0), d0.DeviceID, c.ID, escrow.CommandResult{Completed: true, NewKeyID: s.keyID}))
	}
	v := onVolume(osVolume, s.keyID)
	v.Fingerprints = map[string]string{s.keyID: fingerprint(d0.VerificationKey, genSample(1).password)} // a mismatch
	_, err = e.db.ApplyReport(ctx, deviceOrigin(d0), d0.DeviceID, escrow.Report{Volumes: []escrow.ReportedVolume{v},
		Events: []escrow.DeviceEvent{{Type: escrow.EventRecoveryUsed, VolumeID: osVolume, KeyID: s.keyID}}})
	must("ApplyReport", err)
	cmds, err = e.db.Commands(ctx, deviceOrigin(d0), d0.DeviceID)
	must("Commands", err)
	for _, c := range cmds {
		must("FinishCommand failed", e.db.FinishCommand(ctx, deviceOrigin(d0), d0.DeviceID, c.ID, escrow.CommandResult{Message: "no"}))
	}
	for _, f := range []escrow.AuditFilter{
		{}, {DeviceID: d0.DeviceID}, {KeyID: genSample(0).keyID}, {Actor: "admin@example.com"}, {Action: escrow.ActionKeyRead},
		{Source: string(escrow.SourceAgent)}, {Outcome: string(escrow.OutcomeDenied)}, {Since: e.clock.Now().Add(-1)},
		{Until: e.clock.Now()}, {Before: 10}, {Ticket: "INC0000001"},
	} {
		f.Limit = 5
		must("ListAudit", e.db.ListAudit(ctx, f, func(escrow.AuditEvent) error { return nil }))
	}
	// The delivery of the trail to a SIEM: the lease, a batch after the cursor, the cursor's
	// move, the failure mark, the lag (with a sink behind, so the oldest pending event is read).
	for _, atHead := range []bool{false, true} {
		_, _, err = e.db.TakeDeliveryLease(ctx, map[bool]string{false: "syslog", true: "webhook"}[atHead], "plan", time.Minute, atHead)
		must("TakeDeliveryLease", err)
	}
	_, err = e.db.AuditAfter(ctx, 10, 5)
	must("AuditAfter", err)
	_, err = e.db.AdvanceDelivery(ctx, "syslog", "plan", 10, time.Minute)
	must("AdvanceDelivery", err)
	_, err = e.db.MarkDeliveryFailing(ctx, "syslog", "plan", time.Minute)
	must("MarkDeliveryFailing", err)
	_, err = e.db.DeliveryStates(ctx, []string{"syslog", "webhook"})
	must("DeliveryStates", err)
	must("ReleaseDeliveryLease", e.db.ReleaseDeliveryLease(ctx, "syslog", "plan"))
	// The email notifications (internal/notify): the events just before a batch, the request
	// an approval answers (walked back from the approval until found), and the look-ups.
	must("ListAudit before", e.db.ListAudit(ctx, escrow.AuditFilter{Before: 20, Limit: 2}, func(escrow.AuditEvent) error { return nil }))
	must("ListAudit request", e.db.ListAudit(ctx, escrow.AuditFilter{Action: "key.request", Before: 20}, func(escrow.AuditEvent) error { return nil }))
	_, err = e.db.DeviceRecord(ctx, d0.DeviceID)
	must("DeviceRecord", err)
	_, err = e.db.UserByName(ctx, "admin@example.com")
	must("UserByName", err)
	_, err = e.db.Approvers(ctx)
	must("Approvers", err)
	exerciseApprovals(t, e, d0, must)
	_, err = e.db.UpdateSettings(ctx, adminOrigin, map[string]string{"escrowGracePeriod": "2h", "maxKeyAge": "10d"})
	must("UpdateSettings", err)
	_, err = e.db.RetireDevice(ctx, adminOrigin, devices[2].DeviceID, "test")
	must("RetireDevice", err)
	e.clock.Advance(30 * 24 * 3600e9)
	_, err = e.db.RunJobs(ctx)
	must("RunJobs", err)
}

// exerciseApprovals runs every step of two-person approval and each of its listings.
func exerciseApprovals(t *testing.T, e *env, d escrow.Enrolled, must func(string, error)) {
	t.Helper()
	ctx := e.ctx
	_, err := e.db.UpdateSettings(ctx, adminOrigin, map[string]string{"approvalRequired": "true"})
	must("UpdateSettings", err)
	view := asHelpdesk("test", "INC0000001")
	pending, err := e.db.Disclose(ctx, helpdeskOrigin, d.DeviceID, view, allowAll)
	must("Disclose pending", err)
	if pending.Pending == nil {
		t.Fatal("no pending request")
	}
	_, _, err = e.db.RequestApproval(ctx, helpdeskOrigin, d.DeviceID, view, allowAll)
	must("RequestApproval", err)
	for _, scope := range []escrow.Scope{allScope, {Tags: []string{"lab"}}} {
		n, err := e.db.CountPendingApprovals(ctx, scope, "admin@example.com")
		must("CountPendingApprovals", err)
		_ = n
		for _, f := range []escrow.ApprovalFilter{{}, {Status: escrow.ApprovalApproved}, {Status: escrow.ApprovalExpired},
			{Status: escrow.ApprovalDenied}, {Status: escrow.ApprovalUsed}, {Requester: "helpdesk@example.com"},
			{Requester: "helpdesk@example.com", Status: escrow.ApprovalPending}} {
			f.Scope, f.Limit = scope, 1
			_, next, err := e.db.ListApprovals(ctx, f)
			must("ListApprovals", err)
			if next != "" {
				f.Cursor = next
				_, _, err = e.db.ListApprovals(ctx, f)
				must("ListApprovals page 2", err)
			}
		}
	}
	_, err = e.db.DecideApproval(ctx, adminOrigin, pending.Pending.ID, true, "", allowDevice)
	must("DecideApproval", err)
	_, err = e.db.Disclose(ctx, helpdeskOrigin, d.DeviceID, view, allowAll)
	must("Disclose approved", err)
	_, err = e.db.UpdateSettings(ctx, adminOrigin, map[string]string{"approvalRequired": "false"})
	must("UpdateSettings", err)
	// Decided requests of the past, so that PostgreSQL's planner judges the table by a history
	// rather than by the two rows above (with which every index looks alike).
	e.exec(e.raw(), `INSERT INTO approvals (id, device_id, requester, reason, status, created_at, expires_at)
		SELECT 'past-' || id, id, 'person@example.com', 'past', 'used', 1, 1 FROM devices`)
}

// skipPlan reports statements that have no plan worth checking.
func skipPlan(q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	for _, p := range []string{"PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET ", "CREATE", "SELECT PG_"} {
		if strings.HasPrefix(q, p) {
			return true
		}
	}
	return false
}

// page reports whether the statement is a page: ordered and limited.
func page(q string) bool {
	u := strings.ToUpper(q)
	return strings.Contains(u, "ORDER BY") && strings.Contains(u, " LIMIT ")
}

var tableRef = regexp.MustCompile(`(?i)\b(?:FROM|JOIN|UPDATE|INTO)\s+([a-z_]+)(?:\s+(?:AS\s+)?([a-z][a-z0-9_]*))?`)

// aliases maps the names a plan may use for a table (its own and its aliases) to the table.
func aliases(q string) map[string]string {
	out := map[string]string{}
	for _, m := range tableRef.FindAllStringSubmatch(q, -1) {
		out[m[1]] = m[1]
		if a := strings.ToLower(m[2]); a != "" && !slices.Contains([]string{"where", "join", "on", "order", "group", "limit", "set", "left", "inner", "values", "as"}, a) {
			out[m[2]] = m[1]
		}
	}
	return out
}

var (
	sqliteScan  = regexp.MustCompile(`^SCAN ([a-z_0-9]+)`)
	sqliteIndex = regexp.MustCompile(`USING (?:COVERING )?INDEX ([a-z_0-9]+)`)
)

// partialIndexes names the partial indexes of the database.
func partialIndexes(t *testing.T, e *env, raw *sql.DB) map[string]bool {
	t.Helper()
	query := `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL`
	if onPostgres() {
		query = `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()`
	}
	rows, err := raw.QueryContext(e.ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		out[name] = strings.Contains(strings.ToUpper(def), " WHERE ")
	}
	return out
}

// sqliteScans returns the full scans in SQLite's plan of the statement: a SCAN of a watched
// table, unless the statement is a page whose scan yields rows in the page's order (no sort
// follows), so the limit stops it.
func sqliteScans(t *testing.T, e *env, raw *sql.DB, s store.Statement) []string {
	t.Helper()
	rows, err := raw.QueryContext(e.ctx, "EXPLAIN QUERY PLAN "+s.Query, s.Args...)
	if err != nil {
		t.Fatalf("EXPLAIN QUERY PLAN %s: %v", oneLine(s.Query), err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sorted := slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "TEMP B-TREE FOR ORDER BY") })
	partial := partialIndexes(t, e, raw)
	names := aliases(s.Query)
	var out []string
	for _, l := range lines {
		m := sqliteScan.FindStringSubmatch(l)
		if m == nil || !slices.Contains(watched, names[m[1]]) {
			continue
		}
		if page(s.Query) && !sorted {
			// A walk in the page's order, stopped by the limit: it costs the page only if
			// nothing but the page's position filters what it walks.
			if f := walkFilters(s.Query); len(f) > 0 {
				out = append(out, fmt.Sprintf("page walk of %s filtered by %v: the walk costs the rows skipped (plan: %s)",
					names[m[1]], f, strings.Join(lines, "; ")))
			}
			continue
		}
		if ix := sqliteIndex.FindStringSubmatch(l); ix != nil && partial[ix[1]] {
			continue // a partial index holds only the rows the statement is after
		}
		out = append(out, fmt.Sprintf("full scan of %s: %q (plan: %s)", names[m[1]], l, strings.Join(lines, "; ")))
	}
	return out
}

// postgresScans returns the full scans in PostgreSQL's plan of the statement.
func postgresScans(t *testing.T, e *env, raw *sql.DB, s store.Statement) []string {
	t.Helper()
	var text string
	if err := raw.QueryRowContext(e.ctx, "EXPLAIN (FORMAT JSON) "+s.Query, s.Args...).Scan(&text); err != nil {
		t.Fatalf("EXPLAIN %s: %v", oneLine(s.Query), err)
	}
	var plans []struct {
		Plan postgresPlan `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(text), &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN %s: %v %s", oneLine(s.Query), err, text)
	}
	var out []string
	postgresProblems(plans[0].Plan, s.Query, partialIndexes(t, e, raw), false, &out)
	for i := range out {
		out[i] += " (plan: " + text + ")"
	}
	return out
}

var (
	condColumn = regexp.MustCompile(`(?i)(?:\b[a-z]\.)?\b([a-z_]+)\s*(?:=|<>|<=|>=|<|>|\bIN\b|\bIS\b)`)
	orderBy    = regexp.MustCompile(`(?is)\bORDER BY (.*?)(?:\bLIMIT\b|$)`)
)

// walkFilters returns the columns a page's WHERE clause filters on besides the columns of its
// order (its position) and retired_at (the condition of the partial indexes that pages walk).
func walkFilters(q string) []string {
	where := q
	if i := strings.Index(strings.ToUpper(q), " WHERE "); i >= 0 {
		where = q[i:]
	} else {
		return nil
	}
	if i := strings.LastIndex(strings.ToUpper(where), " ORDER BY "); i >= 0 {
		where = where[:i]
	}
	order := map[string]bool{"retired_at": true}
	if m := orderBy.FindStringSubmatch(q); m != nil {
		for _, c := range strings.Split(m[1], ",") {
			f := strings.Fields(c)
			if len(f) > 0 {
				name := f[0]
				if i := strings.Index(name, "."); i >= 0 {
					name = name[i+1:]
				}
				order[name] = true
			}
		}
	}
	var out []string
	if strings.Contains(strings.ToUpper(where), "IN (SELECT") {
		out = append(out, "a subquery")
	}
	for _, m := range condColumn.FindAllStringSubmatch(where, -1) {
		c := strings.ToLower(m[1])
		if !order[c] && !slices.Contains(out, c) && !slices.Contains([]string{"and", "or", "not", "null", "where"}, c) {
			out = append(out, c)
		}
	}
	return out
}

func oneLine(q string) string { return strings.Join(strings.Fields(q), " ") }

// postgresPlan is the part of EXPLAIN (FORMAT JSON) the check reads.
type postgresPlan struct {
	NodeType  string         `json:"Node Type"`
	Parent    string         `json:"Parent Relationship"`
	Relation  string         `json:"Relation Name"`
	IndexName string         `json:"Index Name"`
	IndexCond string         `json:"Index Cond"`
	Plans     []postgresPlan `json:"Plans"`
}

// postgresProblems collects the full scans of watched tables in the plan p of q: sequential
// scans, and walks of a whole index outside a page unless the index is partial (it holds only
// the rows asked for) and the walk runs once, not once per row of an outer loop. Which index
// PostgreSQL walks for a page depends on the sizes of the tables, so filtered page walks are
// checked on SQLite, whose migrations have the same indexes.
func postgresProblems(p postgresPlan, q string, partial map[string]bool, perRow bool, out *[]string) {
	perRow = perRow || p.Parent == "SubPlan" || p.Parent == "Inner"
	if slices.Contains(watched, p.Relation) {
		switch {
		case p.NodeType == "Seq Scan":
			*out = append(*out, "sequential scan of "+p.Relation)
		case (p.NodeType == "Index Scan" || p.NodeType == "Index Only Scan") && p.IndexCond == "" && !page(q) &&
			(!partial[p.IndexName] || perRow):
			*out = append(*out, "walk of all of "+p.IndexName+" on "+p.Relation)
		}
	}
	for _, c := range p.Plans {
		postgresProblems(c, q, partial, perRow, out)
	}
}
