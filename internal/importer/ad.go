package importer

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/keyward/keyward/internal/escrow"
)

// AD reads the recovery passwords Active Directory holds (on-premises escrow by Group Policy,
// MBAM, ConfigMgr): msFVE-RecoveryInformation objects, children of computer objects, over
// LDAP with TLS (ldaps://, or ldap:// with StartTLS), a simple or SASL EXTERNAL bind, and
// paged results.
type AD struct {
	URL      string // ldaps://dc1.example.com or ldap://dc1.example.com
	StartTLS bool   // required with ldap://: credentials and keys never cross the network in the clear
	TLS      *tls.Config
	// BindDN and Password are a simple bind (in AD the DN or user@domain); SASLExternal binds
	// with the TLS client certificate instead.
	BindDN, Password string
	SASLExternal     bool
	BaseDN           string // where to search, e.g. DC=example,DC=com
	Filter           string // an extra LDAP filter on the recovery objects, e.g. (whenCreated>=20240101000000.0Z)
	// OwnerAttribute is the computer's attribute naming its owner: managedBy (the default), a
	// DN whose userPrincipalName is taken, or an attribute holding a UPN.
	OwnerAttribute string
	PageSize       uint32 // 500 by default

	conn      *ldap.Conn
	computers map[string]computer
}

type computer struct {
	name, owner string
	err         error
}

// Read calls each for every recovery password under BaseDN, with Position "object DN".
func (a *AD) Read(ctx context.Context, each Each) error {
	if err := a.connect(); err != nil {
		return err
	}
	defer a.conn.Close()
	if a.PageSize == 0 {
		a.PageSize = 500
	}
	if a.OwnerAttribute == "" {
		a.OwnerAttribute = "managedBy"
	}
	a.computers = map[string]computer{}
	filter := "(objectClass=msFVE-RecoveryInformation)"
	if a.Filter != "" {
		if _, err := ldap.CompileFilter(a.Filter); err != nil {
			return fmt.Errorf("ad: filter: %w", err)
		}
		filter = "(&" + filter + a.Filter + ")"
	}
	paging := ldap.NewControlPaging(a.PageSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		req := ldap.NewSearchRequest(a.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, filter,
			[]string{"msFVE-RecoveryPassword", "msFVE-RecoveryGuid", "msFVE-VolumeGuid", "whenCreated"}, []ldap.Control{paging})
		res, err := a.conn.Search(req)
		if err != nil {
			return fmt.Errorf("ad: searching %s: %w", a.BaseDN, err)
		}
		for _, e := range res.Entries {
			rec, err := a.record(e)
			if err != nil {
				return err
			}
			if err := each(rec); err != nil {
				return err
			}
		}
		c, _ := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if c == nil || len(c.Cookie) == 0 {
			return nil
		}
		paging.SetCookie(c.Cookie)
	}
}

func (a *AD) connect() error {
	u := strings.ToLower(a.URL)
	switch {
	case strings.HasPrefix(u, "ldaps://"):
	case strings.HasPrefix(u, "ldap://") && a.StartTLS:
	default:
		return errors.New("ad: use ldaps://, or ldap:// with StartTLS: the bind and the keys must not cross the network in the clear")
	}
	cfg := a.TLS
	if cfg == nil {
		cfg = &tls.Config{}
	}
	conn, err := ldap.DialURL(a.URL, ldap.DialWithTLSConfig(cfg))
	if err != nil {
		return fmt.Errorf("ad: %w", err)
	}
	if a.StartTLS {
		if err := conn.StartTLS(cfg); err != nil {
			conn.Close()
			return fmt.Errorf("ad: StartTLS: %w", err)
		}
	}
	switch {
	case a.SASLExternal:
		err = conn.ExternalBind()
	case a.BindDN != "":
		err = conn.Bind(a.BindDN, a.Password)
	default:
		err = errors.New("give a bind DN and password, or SASL EXTERNAL")
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("ad: bind: %w", err)
	}
	a.conn = conn
	return nil
}

// record turns one msFVE-RecoveryInformation entry into a record: the key ID from
// msFVE-RecoveryGuid (or, without it, the object's name, which ends in {GUID}), the computer
// from the parent object.
func (a *AD) record(e *ldap.Entry) (escrow.ImportRecord, error) {
	rec := escrow.ImportRecord{Position: "object " + e.DN, Password: e.GetAttributeValue("msFVE-RecoveryPassword")}
	if g := e.GetRawAttributeValue("msFVE-RecoveryGuid"); len(g) == 16 {
		rec.KeyID = windowsGUID(g)
	} else if dn, err := ldap.ParseDN(e.DN); err == nil && len(dn.RDNs) > 0 && len(dn.RDNs[0].Attributes) > 0 {
		v := dn.RDNs[0].Attributes[0].Value
		if i := strings.LastIndexByte(v, '{'); i >= 0 {
			rec.KeyID = v[i:]
		}
	}
	if g := e.GetRawAttributeValue("msFVE-VolumeGuid"); len(g) == 16 {
		rec.VolumeID = "{" + windowsGUID(g) + "}"
	}
	if s := e.GetAttributeValue("whenCreated"); s != "" {
		rec.CreatedAt = parseTime(s)
	}
	dn, err := ldap.ParseDN(e.DN)
	if err != nil || len(dn.RDNs) < 2 {
		return rec, nil // no parent: the store reports the hostname missing
	}
	parent := &ldap.DN{RDNs: dn.RDNs[1:]}
	c, err := a.computer(parent.String())
	if err != nil {
		return rec, err
	}
	if c.err != nil {
		rec.Position += " (" + c.err.Error() + ")"
	}
	rec.Hostname, rec.OwnerUPN = c.name, c.owner
	return rec, nil
}

// computer reads the parent computer object once: its name, and its owner through
// OwnerAttribute.
func (a *AD) computer(dn string) (computer, error) {
	if c, ok := a.computers[dn]; ok {
		return c, nil
	}
	res, err := a.conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=computer)", []string{"name", "cn", "dNSHostName", "objectGUID", a.OwnerAttribute}, nil))
	var c computer
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		c.err = errors.New("its parent is not a computer object")
	case err != nil:
		return c, fmt.Errorf("ad: reading %s: %w", dn, err)
	case len(res.Entries) == 0:
		c.err = errors.New("its parent is not a computer object")
	default:
		e := res.Entries[0]
		c.name = e.GetAttributeValue("name")
		if c.name == "" {
			c.name = e.GetAttributeValue("cn")
		}
		owner := e.GetAttributeValue(a.OwnerAttribute)
		if strings.Contains(owner, "=") { // a DN, like managedBy's
			if c.owner, err = a.upn(owner); err != nil {
				return c, err
			}
		} else if strings.Contains(owner, "@") {
			c.owner = owner
		}
	}
	a.computers[dn] = c
	return c, nil
}

// upn returns the userPrincipalName of the object at dn, "" if it has none.
func (a *AD) upn(dn string) (string, error) {
	res, err := a.conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"userPrincipalName"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ad: reading owner %s: %w", dn, err)
	}
	if len(res.Entries) == 0 {
		return "", nil
	}
	return res.Entries[0].GetAttributeValue("userPrincipalName"), nil
}

// windowsGUID formats a GUID as Active Directory stores it (the first three fields little
// endian) the way Windows prints it.
func windowsGUID(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}
