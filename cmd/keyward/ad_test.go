package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/testkit"
)

// adSchema declares the Active Directory attributes and classes the import reads, with AD's
// OIDs, names and syntaxes: msFVE-RecoveryInformation (1.2.840.113556.1.5.253) must hold
// msFVE-RecoveryPassword (Unicode string) and msFVE-RecoveryGuid (octet string), and may hold
// msFVE-VolumeGuid and msFVE-KeyPackage; it lives under a computer object.
const adSchema = `
attributetype ( 1.2.840.113556.1.4.1964 NAME 'msFVE-RecoveryPassword' EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.1965 NAME 'msFVE-RecoveryGuid' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.1998 NAME 'msFVE-VolumeGuid' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.1999 NAME 'msFVE-KeyPackage' SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.619 NAME 'dNSHostName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.653 NAME 'managedBy' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.2 NAME 'whenCreated' EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.253 NAME 'msFVE-RecoveryInformation' SUP top STRUCTURAL MUST ( cn $ msFVE-RecoveryPassword $ msFVE-RecoveryGuid ) MAY ( msFVE-VolumeGuid $ msFVE-KeyPackage $ whenCreated ) )
objectclass ( 1.2.840.113556.1.3.30 NAME 'computer' SUP top STRUCTURAL MUST cn MAY ( name $ dNSHostName $ objectGUID $ managedBy $ whenCreated ) )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP top STRUCTURAL MUST cn MAY ( userPrincipalName $ userPassword ) )
`

// slapd is a real OpenLDAP server started for one test, with its own configuration and
// database in a temporary directory, on a free loopback port, with TLS (StartTLS).
type slapd struct {
	url, caFile string
}

func startSlapd(t *testing.T) *slapd {
	t.Helper()
	bin := requireProgram(t, "slapd", "KEYWARD_TEST_REQUIRE_SLAPD")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := testkit.NewCA(t).Write(t, dir)
	schema := filepath.Join(dir, "ad.schema")
	if err := os.WriteFile(schema, []byte(adSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include %[1]s/ad.schema
pidfile %[1]s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile %[2]s
TLSCertificateFile %[3]s
TLSCertificateKeyFile %[4]s
database mdb
maxsize 10485760
suffix "DC=example,DC=com"
rootdn "CN=admin,DC=example,DC=com"
rootpw admin-secret
directory %[1]s/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
# Fewer objects than the test holds per search: only paged results see them all.
limits users size.soft=5 size.hard=5 size.prtotal=unlimited
`, dir, caFile, certFile, keyFile)
	confFile := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "ldap://" + addr
	cmd := exec.Command(bin, "-f", confFile, "-h", url+"/", "-d", "0")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitListening(t, addr, "slapd", &logs)
	return &slapd{url: url, caFile: caFile}
}

// adGUID is a GUID as Active Directory stores it: the first three fields little endian.
func adGUID(t *testing.T, s string) []byte {
	t.Helper()
	var b [16]byte
	var a uint32
	var m, n uint16
	var rest [8]byte
	if _, err := fmt.Sscanf(s, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", &a, &m, &n,
		&rest[0], &rest[1], &rest[2], &rest[3], &rest[4], &rest[5], &rest[6], &rest[7]); err != nil {
		t.Fatalf("GUID %s: %v", s, err)
	}
	binary.LittleEndian.PutUint32(b[0:], a)
	binary.LittleEndian.PutUint16(b[4:], m)
	binary.LittleEndian.PutUint16(b[6:], n)
	copy(b[8:], rest[:])
	return b[:]
}

func TestImportAD(t *testing.T) {
	ds := startSlapd(t)
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, _, _, _ := setUp(t, r.URL(), dir)
	mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"autoRotateOnDisclosure":false}`)

	c, err := ldap.DialURL(ds.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind("CN=admin,DC=example,DC=com", "admin-secret"); err != nil {
		t.Fatal(err)
	}
	add := func(dn string, attrs map[string][]string) {
		t.Helper()
		req := ldap.NewAddRequest(dn, nil)
		for k, v := range attrs {
			req.Attribute(k, v)
		}
		if err := c.Add(req); err != nil {
			t.Fatalf("add %s: %v", dn, err)
		}
	}
	add("DC=example,DC=com", map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"example"}, "o": {"Example"}})
	add("OU=Computers,DC=example,DC=com", map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"Computers"}})
	add("CN=reader,DC=example,DC=com", map[string][]string{"objectClass": {"user"}, "cn": {"reader"}, "userPassword": {"reader-secret"}})
	add("CN=Alice,DC=example,DC=com", map[string][]string{"objectClass": {"user"}, "cn": {"Alice"}, "userPrincipalName": {"Alice@Example.com"}})

	// Four computers with three or four passwords each: more objects than one search answers.
	s := bitlockertest.Samples(t)
	type want struct{ host, keyID, password, owner string }
	var wants []want
	for i := range 4 {
		host := fmt.Sprintf("WS-%02d", i)
		cdn := "CN=" + host + ",OU=Computers,DC=example,DC=com"
		attrs := map[string][]string{"objectClass": {"computer"}, "cn": {host}, "name": {host}, "dNSHostName": {strings.ToLower(host) + ".example.com"},
			"objectGUID": {string(adGUID(t, fmt.Sprintf("0000000%d-1111-4222-8333-444455556666", i)))}}
		owner := ""
		if i%2 == 0 {
			attrs["managedBy"], owner = []string{"CN=Alice,DC=example,DC=com"}, "alice@example.com"
		}
		add(cdn, attrs)
		for j := range 3 + i%2 {
			k := s[len(wants)]
			when := time.Date(2024, 7, 19, 4, 9, j, 0, time.UTC)
			add(fmt.Sprintf("CN=%s{%s},%s", when.Format("2006-01-02T15:04:05")+"-00:00", k.KeyID, cdn), map[string][]string{
				"objectClass": {"msFVE-RecoveryInformation"}, "msFVE-RecoveryPassword": {k.Password},
				"msFVE-RecoveryGuid": {string(adGUID(t, k.KeyID))}, "msFVE-VolumeGuid": {string(adGUID(t, fmt.Sprintf("AAAAAAA%d-BBBB-4CCC-8DDD-EEEEEEEEEEEE", i)))},
				"whenCreated": {when.Format("20060102150405.0Z")}})
			wants = append(wants, want{host, k.KeyID, k.Password, owner})
		}
	}
	badDN := "CN=2024-07-19T04:09:59-00:00{9C0A1E2F-3B4C-4D5E-8F60-718293A4B5C6},CN=WS-03,OU=Computers,DC=example,DC=com"
	add(badDN, map[string][]string{"objectClass": {"msFVE-RecoveryInformation"}, "msFVE-RecoveryPassword": {"111111-222222-333333-444444-555555-666666-777777-888888"},
		"msFVE-RecoveryGuid": {string(adGUID(t, "9C0A1E2F-3B4C-4D5E-8F60-718293A4B5C6"))}})

	// The reader sees no more than five objects per search without paged results.
	rc, err := ldap.DialURL(ds.url)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.Bind("CN=reader,DC=example,DC=com", "reader-secret"); err != nil {
		t.Fatal(err)
	}
	_, err = rc.Search(ldap.NewSearchRequest("OU=Computers,DC=example,DC=com", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=msFVE-RecoveryInformation)", []string{"cn"}, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		t.Fatalf("a search without paging: %v, want the size limit exceeded", err)
	}

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("reader-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "ad", "--url", ds.url, "--start-tls", "--ca-file", ds.caFile, "--bind-dn", "CN=reader,DC=example,DC=com",
		"--bind-password-file", pw, "--base-dn", "OU=Computers,DC=example,DC=com", "--page-size", "3"}

	// Without TLS the command refuses before it sends the password.
	code, _, stderr := cli(t, dir, "", append(append([]string{}, args[:4]...), args[5:]...)...)
	if code != 1 || !strings.Contains(stderr, "StartTLS") {
		t.Fatalf("without TLS: %d %s", code, stderr)
	}

	code, out, stderr := cli(t, dir, "", args...)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("%d records: imported %d keys (4 new device records), 0 already held, 0 conflicting, 1 invalid", len(wants)+1, len(wants))) {
		t.Fatalf("import ad: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(strings.ToLower(out), strings.ToLower("object "+badDN+": invalid WS-03 key 9C0A1E2F-3B4C-4D5E-8F60-718293A4B5C6: recoveryPassword: block 7")) || strings.Contains(out+stderr, "111111") {
		t.Fatalf("the invalid object:\n%s", out)
	}
	for _, w := range wants {
		found := lookUp(t, r.URL(), admin, w.keyID[:8])
		if len(found) != 1 || found[0].DeviceName != w.host {
			t.Fatalf("key %s: %+v", w.keyID[:8], found)
		}
		if got := viewKeys(t, r.URL(), admin, found[0].DeviceID)[w.keyID]; got != w.password {
			t.Errorf("key %s: the password viewed is not the one in the directory", w.keyID[:8])
		}
		var d struct{ OwnerUPN string }
		if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/"+found[0].DeviceID, admin, ""), &d); err != nil {
			t.Fatal(err)
		}
		if d.OwnerUPN != w.owner {
			t.Errorf("device %s: owner %q, want %q", w.host, d.OwnerUPN, w.owner)
		}
	}
	if n := len(auditActions(t, r.URL(), admin, "key.import")); n != len(wants) {
		t.Fatalf("%d key.import events, want %d", n, len(wants))
	}
	code, out, _ = cli(t, dir, "", args...)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("imported 0 keys (0 new device records), %d already held", len(wants))) {
		t.Fatalf("second import: %d\n%s", code, out)
	}
	if n := len(auditActions(t, r.URL(), admin, "key.import")); n != len(wants) {
		t.Errorf("the second import recorded %d more key.import events", n-len(wants))
	}
}
