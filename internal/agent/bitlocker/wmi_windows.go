//go:build windows

package bitlocker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	ole "github.com/go-ole/go-ole"
	"github.com/go-ole/go-ole/oleutil"
)

// Namespaces of the classes the agent uses.
const (
	namespaceVolumeEncryption = `root\CIMV2\Security\MicrosoftVolumeEncryption`
	namespaceTPM              = `root\CIMV2\Security\MicrosoftTpm`
	namespaceCIMV2            = `root\CIMV2`
)

// WindowsWMI is the WMI of the running Windows system: Win32_EncryptableVolume and Win32_Tpm
// called over COM through the WbemScripting automation objects, as Fleet's agent does. No
// process is started: a recovery password passes only between WMI and this process's memory,
// so nothing records it (PowerShell's module logging and transcription, process command-line
// auditing). Windows generates new recovery passwords itself (ProtectKeyWithNumericalPassword
// with an empty NumericalPassword), so none is ever passed into a call either.
//
// COM objects belong to the thread that initialised COM; goroutines move between threads. So
// one goroutine, locked to its thread, makes every call, and keeps the connections to the
// namespaces it has opened. It runs for the life of the process.
type WindowsWMI struct {
	once  sync.Once
	calls chan func()
	t     *comThread // set by the COM goroutine before it takes calls
}

var _ WMI = (*WindowsWMI)(nil)

// NewWindowsWMI returns the system's WMI; nothing is connected until the first call.
func NewWindowsWMI() *WindowsWMI { return &WindowsWMI{calls: make(chan func())} }

// comThread is the state of the COM goroutine, touched only by it.
type comThread struct {
	initErr  error
	locator  *ole.IDispatch
	services map[string]*ole.IDispatch
}

// do runs f on the COM goroutine. A call COM is making cannot be cancelled; ctx ends the wait.
func (w *WindowsWMI) do(ctx context.Context, f func(t *comThread) error) error {
	w.once.Do(func() {
		ready := make(chan struct{})
		go func() {
			runtime.LockOSThread() // for ever: the thread belongs to COM
			t := &comThread{services: map[string]*ole.IDispatch{}}
			if err := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); err != nil {
				var oe *ole.OleError
				if !errors.As(err, &oe) || oe.Code() != 1 /* S_FALSE: already initialised */ {
					t.initErr = fmt.Errorf("CoInitializeEx: %w", err)
				}
			}
			w.t = t
			close(ready)
			for f := range w.calls {
				f()
			}
		}()
		<-ready
	})
	done := make(chan error, 1)
	select {
	case w.calls <- func() {
		if w.t.initErr != nil {
			done <- w.t.initErr
			return
		}
		err := f(w.t)
		if err != nil && !isReturnValue(err) {
			w.t.reset() // a broken connection is made again at the next call
		}
		done <- err
	}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isReturnValue reports whether err is a method's ReturnValue, as opposed to COM failing.
func isReturnValue(err error) bool {
	var we *WMIError
	return errors.As(err, &we) && !we.COM
}

func (t *comThread) reset() {
	for k, s := range t.services {
		s.Release()
		delete(t.services, k)
	}
	if t.locator != nil {
		t.locator.Release()
		t.locator = nil
	}
}

// service returns the SWbemServices of a namespace on the local machine.
func (t *comThread) service(namespace string) (*ole.IDispatch, error) {
	if s, ok := t.services[namespace]; ok {
		return s, nil
	}
	if t.locator == nil {
		unknown, err := oleutil.CreateObject("WbemScripting.SWbemLocator")
		if err != nil {
			return nil, comError("creating WbemScripting.SWbemLocator", err)
		}
		disp, err := unknown.QueryInterface(ole.IID_IDispatch)
		unknown.Release()
		if err != nil {
			return nil, comError("SWbemLocator", err)
		}
		t.locator = disp
	}
	// Packet privacy: the answers carry recovery passwords, even on the local machine.
	raw, err := oleutil.CallMethod(t.locator, "ConnectServer", nil, namespace)
	if err != nil {
		return nil, comError("ConnectServer "+namespace, err)
	}
	s := raw.ToIDispatch()
	if sec, err := oleutil.GetProperty(s, "Security_"); err == nil {
		sd := sec.ToIDispatch()
		_, _ = oleutil.PutProperty(sd, "AuthenticationLevel", 6) // wbemAuthenticationLevelPktPrivacy
		_, _ = oleutil.PutProperty(sd, "ImpersonationLevel", 3)  // wbemImpersonationLevelImpersonate
		sd.Release()
	}
	t.services[namespace] = s
	return s, nil
}

// comError names a failed COM call with its HRESULT, taken from the exception WMI raised when
// there is one (WBEM_E_ACCESS_DENIED, WBEM_E_INVALID_NAMESPACE, ...).
func comError(what string, err error) error {
	var oe *ole.OleError
	if errors.As(err, &oe) {
		code := uint32(oe.Code())
		if ex, ok := oe.SubError().(ole.EXCEPINFO); ok && ex.SCODE() != 0 {
			code = ex.SCODE()
		}
		return &WMIError{Method: what, Code: HRESULT(code), COM: true}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// objectPath is the WMI object path of a volume: DeviceID in quotes, backslashes and quotes
// escaped.
func objectPath(deviceID string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "Win32_EncryptableVolume.DeviceID='" + r.Replace(deviceID) + "'"
}

// volume runs f on the Win32_EncryptableVolume instance of deviceID.
func (w *WindowsWMI) volume(ctx context.Context, deviceID string, f func(v *ole.IDispatch) error) error {
	return w.do(ctx, func(t *comThread) error {
		s, err := t.service(namespaceVolumeEncryption)
		if err != nil {
			return err
		}
		raw, err := oleutil.CallMethod(s, "Get", objectPath(deviceID))
		if err != nil {
			return comError("Win32_EncryptableVolume "+deviceID, err)
		}
		v := raw.ToIDispatch()
		defer v.Release()
		return f(v)
	})
}

// call calls a method and turns its ReturnValue into nil or a *WMIError.
func call(v *ole.IDispatch, method string, args ...any) error {
	res, err := oleutil.CallMethod(v, method, args...)
	if err != nil {
		return comError(method, err)
	}
	defer res.Clear()
	return ReturnValue(method, variantUint32(res))
}

// variantUint32 reads an integer VARIANT (WMI gives uint32 values as VT_I4).
func variantUint32(v *ole.VARIANT) uint32 {
	switch x := v.Value().(type) {
	case int32:
		return uint32(x)
	case int64:
		return uint32(x)
	case uint32:
		return x
	case int16:
		return uint32(x)
	case uint8:
		return uint32(x)
	case int:
		return uint32(x)
	}
	return uint32(v.Val)
}

func newOut() *ole.VARIANT {
	v := new(ole.VARIANT)
	ole.VariantInit(v)
	return v
}

// EncryptableVolumes implements WMI.
func (w *WindowsWMI) EncryptableVolumes(ctx context.Context) ([]EncryptableVolume, error) {
	var out []EncryptableVolume
	err := w.do(ctx, func(t *comThread) error {
		s, err := t.service(namespaceVolumeEncryption)
		if err != nil {
			return err
		}
		raw, err := oleutil.CallMethod(s, "InstancesOf", "Win32_EncryptableVolume")
		if err != nil {
			return comError("InstancesOf Win32_EncryptableVolume", err)
		}
		set := raw.ToIDispatch()
		defer set.Release()
		out = nil
		return oleutil.ForEach(set, func(item *ole.VARIANT) error {
			obj := item.ToIDispatch()
			var ev EncryptableVolume
			if p, err := oleutil.GetProperty(obj, "DeviceID"); err == nil {
				ev.DeviceID = p.ToString()
				p.Clear()
			}
			if p, err := oleutil.GetProperty(obj, "DriveLetter"); err == nil {
				ev.DriveLetter = p.ToString()
				p.Clear()
			}
			ev.VolumeType = VolumeTypeFixedData
			if p, err := oleutil.GetProperty(obj, "VolumeType"); err == nil && p.VT != ole.VT_NULL {
				ev.VolumeType = variantUint32(p)
				p.Clear()
			}
			if ev.DeviceID == "" {
				return errors.New("Win32_EncryptableVolume: an instance without DeviceID")
			}
			out = append(out, ev)
			return nil
		})
	})
	return out, err
}

// uint32Out calls a method whose one output is an integer.
func (w *WindowsWMI) uint32Out(ctx context.Context, deviceID, method string, args ...any) (uint32, error) {
	var n uint32
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		o := newOut()
		defer o.Clear()
		if err := call(v, method, append(args, o)...); err != nil {
			return err
		}
		n = variantUint32(o)
		return nil
	})
	return n, err
}

// GetConversionStatus implements WMI.
func (w *WindowsWMI) GetConversionStatus(ctx context.Context, deviceID string) (uint32, error) {
	var c uint32
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		outs := []*ole.VARIANT{newOut(), newOut(), newOut(), newOut(), newOut()}
		defer func() {
			for _, o := range outs {
				o.Clear()
			}
		}()
		// ConversionStatus, EncryptionPercentage, EncryptionFlags, WipingStatus,
		// WipingPercentage, then PrecisionFactor (in).
		if err := call(v, "GetConversionStatus", outs[0], outs[1], outs[2], outs[3], outs[4], 0); err != nil {
			return err
		}
		c = variantUint32(outs[0])
		return nil
	})
	return c, err
}

// GetProtectionStatus implements WMI.
func (w *WindowsWMI) GetProtectionStatus(ctx context.Context, deviceID string) (uint32, error) {
	return w.uint32Out(ctx, deviceID, "GetProtectionStatus")
}

// GetLockStatus implements WMI.
func (w *WindowsWMI) GetLockStatus(ctx context.Context, deviceID string) (uint32, error) {
	return w.uint32Out(ctx, deviceID, "GetLockStatus")
}

// GetKeyProtectors implements WMI.
func (w *WindowsWMI) GetKeyProtectors(ctx context.Context, deviceID string) ([]string, error) {
	var ids []string
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		o := newOut()
		defer o.Clear()
		if err := call(v, "GetKeyProtectors", 0, o); err != nil {
			return err
		}
		ids = nil
		if a := o.ToArray(); a != nil {
			ids = a.ToStringArray()
		}
		return nil
	})
	return ids, err
}

// GetKeyProtectorType implements WMI.
func (w *WindowsWMI) GetKeyProtectorType(ctx context.Context, deviceID, keyID string) (uint32, error) {
	return w.uint32Out(ctx, deviceID, "GetKeyProtectorType", keyID)
}

// GetKeyProtectorNumericalPassword implements WMI.
func (w *WindowsWMI) GetKeyProtectorNumericalPassword(ctx context.Context, deviceID, keyID string) (string, error) {
	var pw string
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		o := newOut()
		defer o.Clear() // frees the BSTR; Go's copy lives only as long as the caller needs it
		if err := call(v, "GetKeyProtectorNumericalPassword", keyID, o); err != nil {
			return err
		}
		pw = o.ToString()
		return nil
	})
	return pw, err
}

// GetKeyProtectorExternalKey implements WMI.
func (w *WindowsWMI) GetKeyProtectorExternalKey(ctx context.Context, deviceID, keyID string) ([]byte, error) {
	var key []byte
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		o := newOut()
		defer o.Clear()
		if err := call(v, "GetKeyProtectorExternalKey", keyID, o); err != nil {
			return err
		}
		if a := o.ToArray(); a != nil {
			key = a.ToByteArray()
		}
		return nil
	})
	return key, err
}

// protect calls a ProtectKeyWith* method whose last output is VolumeKeyProtectorID.
func (w *WindowsWMI) protect(ctx context.Context, deviceID, method string, args ...any) (string, error) {
	var id string
	err := w.volume(ctx, deviceID, func(v *ole.IDispatch) error {
		o := newOut()
		defer o.Clear()
		if err := call(v, method, append(args, o)...); err != nil {
			return err
		}
		id = o.ToString()
		return nil
	})
	return id, err
}

// ProtectKeyWithNumericalPassword implements WMI: FriendlyName and NumericalPassword are left
// out (null), so Windows generates the password.
func (w *WindowsWMI) ProtectKeyWithNumericalPassword(ctx context.Context, deviceID string) (string, error) {
	return w.protect(ctx, deviceID, "ProtectKeyWithNumericalPassword", nil, nil)
}

// ProtectKeyWithTPM implements WMI: no friendly name, the default platform validation profile.
func (w *WindowsWMI) ProtectKeyWithTPM(ctx context.Context, deviceID string) (string, error) {
	return w.protect(ctx, deviceID, "ProtectKeyWithTPM", nil, nil)
}

// DeleteKeyProtector implements WMI.
func (w *WindowsWMI) DeleteKeyProtector(ctx context.Context, deviceID, keyID string) error {
	return w.volume(ctx, deviceID, func(v *ole.IDispatch) error { return call(v, "DeleteKeyProtector", keyID) })
}

// EnableKeyProtectors implements WMI.
func (w *WindowsWMI) EnableKeyProtectors(ctx context.Context, deviceID string) error {
	return w.volume(ctx, deviceID, func(v *ole.IDispatch) error { return call(v, "EnableKeyProtectors") })
}

// Encrypt implements WMI.
func (w *WindowsWMI) Encrypt(ctx context.Context, deviceID string, method, flags uint32) error {
	return w.volume(ctx, deviceID, func(v *ole.IDispatch) error { return call(v, "Encrypt", int32(method), int32(flags)) })
}

// TPMReady implements WMI with Win32_Tpm.IsReady. No instance of Win32_Tpm means no TPM.
func (w *WindowsWMI) TPMReady(ctx context.Context) (bool, error) {
	var ready bool
	err := w.do(ctx, func(t *comThread) error {
		s, err := t.service(namespaceTPM)
		if err != nil {
			return err
		}
		raw, err := oleutil.CallMethod(s, "InstancesOf", "Win32_Tpm")
		if err != nil {
			return comError("InstancesOf Win32_Tpm", err)
		}
		set := raw.ToIDispatch()
		defer set.Release()
		return oleutil.ForEach(set, func(item *ole.VARIANT) error {
			obj := item.ToIDispatch()
			o := newOut()
			defer o.Clear()
			if err := call(obj, "IsReady", o); err != nil {
				return err
			}
			b, _ := o.Value().(bool)
			ready = ready || b
			return nil
		})
	})
	return ready, err
}

// BIOSSerialNumber reads Win32_BIOS.SerialNumber, for enrollment.
func (w *WindowsWMI) BIOSSerialNumber(ctx context.Context) (string, error) {
	var serial string
	err := w.do(ctx, func(t *comThread) error {
		s, err := t.service(namespaceCIMV2)
		if err != nil {
			return err
		}
		raw, err := oleutil.CallMethod(s, "InstancesOf", "Win32_BIOS")
		if err != nil {
			return comError("InstancesOf Win32_BIOS", err)
		}
		set := raw.ToIDispatch()
		defer set.Release()
		return oleutil.ForEach(set, func(item *ole.VARIANT) error {
			p, err := oleutil.GetProperty(item.ToIDispatch(), "SerialNumber")
			if err == nil {
				serial = strings.TrimSpace(p.ToString())
				p.Clear()
			}
			return nil
		})
	})
	return serial, err
}
