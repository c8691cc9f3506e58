package importer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Entra reads the BitLocker recovery keys of a Microsoft Entra ID tenant through Microsoft
// Graph, with an app registration's client credentials (application permissions
// BitlockerKey.Read.All and Device.Read.All): the list of keys
// (GET /informationProtection/bitlocker/recoveryKeys, paged by @odata.nextLink), each key's
// password (GET …/recoveryKeys/{id}?$select=key), and each device's display name
// (GET /devices?$filter=deviceId eq '…').
type Entra struct {
	TenantID     string
	ClientID     string
	ClientSecret string
	// GraphURL is Graph's root with its version, https://graph.microsoft.com/v1.0 by default;
	// national clouds have their own (https://graph.microsoft.us/v1.0, …).
	GraphURL string
	// LoginURL is the identity platform's root, https://login.microsoftonline.com by default
	// (https://login.microsoftonline.us, …).
	LoginURL string
	// UserAgent names the calling application, which Graph requires of these calls.
	UserAgent string
	Client    *http.Client
	// Sleep waits out a Retry-After; tests replace it. nil: time passes.
	Sleep func(context.Context, time.Duration) error

	token   string
	expires time.Time
	names   map[string]string
}

// Graph answers 429 (throttled) and 503 (busy) with Retry-After; a read is tried this many
// times, waiting at most maxRetryAfter each time.
const (
	graphAttempts = 8
	maxRetryAfter = 5 * time.Minute
)

type graphKey struct {
	ID              string `json:"id"`
	CreatedDateTime string `json:"createdDateTime"`
	DeviceID        string `json:"deviceId"`
	VolumeType      string `json:"volumeType"`
	Key             string `json:"key"`
}

// Read calls each for every recovery key of the tenant, with Position "Entra key N (ID)".
// Errors name the Graph call and its status and code, never a key.
func (g *Entra) Read(ctx context.Context, each Each) error {
	if g.GraphURL == "" {
		g.GraphURL = "https://graph.microsoft.com/v1.0"
	}
	if g.LoginURL == "" {
		g.LoginURL = "https://login.microsoftonline.com"
	}
	if g.Client == nil {
		g.Client = &http.Client{Timeout: time.Minute}
	}
	g.GraphURL, g.LoginURL = strings.TrimSuffix(g.GraphURL, "/"), strings.TrimSuffix(g.LoginURL, "/")
	g.names = map[string]string{}
	next := g.GraphURL + "/informationProtection/bitlocker/recoveryKeys"
	n := 0
	for next != "" {
		// nextLink is followed only on Graph's own host: a page pointing elsewhere must not
		// receive the token.
		if !strings.HasPrefix(next, g.GraphURL+"/") {
			return fmt.Errorf("entra: @odata.nextLink leaves %s", g.GraphURL)
		}
		var page struct {
			Value    []graphKey `json:"value"`
			NextLink string     `json:"@odata.nextLink"`
		}
		if err := g.get(ctx, next, &page); err != nil {
			return fmt.Errorf("entra: listing recovery keys: %w", err)
		}
		for _, k := range page.Value {
			n++
			rec, err := g.record(ctx, k, n)
			if err != nil {
				return err
			}
			if err := each(rec); err != nil {
				return err
			}
		}
		next = page.NextLink
	}
	return nil
}

func (g *Entra) record(ctx context.Context, k graphKey, n int) (escrow.ImportRecord, error) {
	rec := escrow.ImportRecord{Position: fmt.Sprintf("Entra key %d (%s)", n, k.ID), KeyID: k.ID, VolumeType: VolumeType(k.VolumeType)}
	if k.ID == "" || strings.ContainsAny(k.ID, "/?#%") {
		return rec, nil // the store reports the key ID
	}
	var full graphKey
	if err := g.get(ctx, g.GraphURL+"/informationProtection/bitlocker/recoveryKeys/"+url.PathEscape(k.ID)+"?%24select=key", &full); err != nil {
		return rec, fmt.Errorf("entra: reading key %s: %w", k.ID, err)
	}
	rec.Password = full.Key
	if t, err := time.Parse(time.RFC3339Nano, k.CreatedDateTime); err == nil {
		rec.CreatedAt = t
	}
	name, err := g.deviceName(ctx, k.DeviceID)
	if err != nil {
		return rec, err
	}
	if name == "" {
		rec.Position += " of device " + k.DeviceID + ", not found in Entra"
	}
	rec.Hostname = name
	return rec, nil
}

// deviceName resolves a deviceId to the device's display name (its computer name), once per
// device; "" when Entra has no such device any more.
func (g *Entra) deviceName(ctx context.Context, deviceID string) (string, error) {
	if name, ok := g.names[deviceID]; ok {
		return name, nil
	}
	if deviceID == "" || strings.ContainsAny(deviceID, "'") {
		return "", nil
	}
	q := url.Values{"$filter": {"deviceId eq '" + deviceID + "'"}, "$select": {"displayName"}}
	var res struct {
		Value []struct {
			DisplayName string `json:"displayName"`
		} `json:"value"`
	}
	if err := g.get(ctx, g.GraphURL+"/devices?"+q.Encode(), &res); err != nil {
		return "", fmt.Errorf("entra: looking up device %s: %w", deviceID, err)
	}
	name := ""
	if len(res.Value) > 0 {
		name = res.Value[0].DisplayName
	}
	g.names[deviceID] = name
	return name, nil
}

// get reads one Graph resource, with a token, waiting out throttling.
func (g *Entra) get(ctx context.Context, u string, into any) error {
	refreshed := false
	for attempt := 1; ; attempt++ {
		if err := g.ensureToken(ctx); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+g.token)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", g.UserAgent)
		req.Header.Set("ocp-client-name", "Keyward")
		req.Header.Set("ocp-client-version", g.UserAgent)
		res, err := g.Client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, 32<<20))
		res.Body.Close()
		if err != nil {
			return err
		}
		switch {
		case res.StatusCode == http.StatusOK:
			return json.Unmarshal(body, into)
		case res.StatusCode == http.StatusUnauthorized && !refreshed:
			refreshed, g.token = true, "" // expired early: one new token
			continue
		case (res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable) && attempt < graphAttempts:
			if err := g.sleep(ctx, retryAfter(res.Header.Get("Retry-After"), attempt)); err != nil {
				return err
			}
			continue
		}
		return graphError(res.StatusCode, body)
	}
}

// retryAfter reads Retry-After (seconds, or an HTTP date); without one, it backs off.
func retryAfter(h string, attempt int) time.Duration {
	d := time.Duration(1<<min(attempt, 6)) * time.Second
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = time.Until(t)
	}
	return max(0, min(d, maxRetryAfter))
}

func (g *Entra) sleep(ctx context.Context, d time.Duration) error {
	if g.Sleep != nil {
		return g.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ensureToken gets an app-only token for Graph from the tenant's token endpoint, again when
// the one held has less than five minutes left.
func (g *Entra) ensureToken(ctx context.Context) error {
	if g.token != "" && time.Until(g.expires) > 5*time.Minute {
		return nil
	}
	scope := "https://graph.microsoft.com/.default"
	if u, err := url.Parse(g.GraphURL); err == nil && u.Host != "" {
		scope = u.Scheme + "://" + u.Host + "/.default"
	}
	form := url.Values{"client_id": {g.ClientID}, "client_secret": {g.ClientSecret}, "scope": {scope}, "grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.LoginURL+"/"+url.PathEscape(g.TenantID)+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", g.UserAgent)
	res, err := g.Client.Do(req)
	if err != nil {
		return fmt.Errorf("entra: token: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("entra: token: %w", err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		Error       string `json:"error"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || res.StatusCode != http.StatusOK || tok.AccessToken == "" {
		// The identity platform's error code (invalid_client, unauthorized_client, …) is safe
		// to show; its description may quote the request, so it is left out.
		return fmt.Errorf("entra: token for client %s in tenant %s: status %d %s", g.ClientID, g.TenantID, res.StatusCode, tok.Error)
	}
	g.token, g.expires = tok.AccessToken, time.Now().Add(time.Duration(tok.ExpiresIn)*time.Second)
	return nil
}

// graphError describes a Graph error answer by status and code, not by its message, which
// could echo the request.
func graphError(status int, body []byte) error {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error.Code == "" {
		return fmt.Errorf("status %d", status)
	}
	return fmt.Errorf("status %d %s", status, e.Error.Code)
}
