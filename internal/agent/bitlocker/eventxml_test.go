package bitlocker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// recoveryEventXML is event 24652 as EvtRender renders it (the layout of the driver's events in
// the System log; the protector ID is the fifth data value).
const recoveryEventXML = `<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-BitLocker-Driver' Guid='{5d674230-ca9f-11da-a94d-0800200c9a66}'/><EventID>24652</EventID><Version>0</Version><Level>4</Level><Task>0</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2019-03-04T07:15:31.4210000Z'/><EventRecordID>5123</EventRecordID><Correlation/><Execution ProcessID='4' ThreadID='8'/><Channel>System</Channel><Computer>LT-0042</Computer><Security/></System><EventData><Data Name='VolumeName'>\\?\Volume{1b1c2d3e-0000-0000-0000-100000000000}</Data><Data Name='VolumeMountPoint'>C:</Data><Data Name='IdentificationField'></Data><Data Name='DisplayName'></Data><Data Name='ProtectorGUID'>{8a696888-99a7-4fac-92c7-6cc497ea7bdf}</Data></EventData></Event>`

const managementEventXML = `<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-BitLocker-API'/><EventID>782</EventID><TimeCreated SystemTime='2026-11-02T09:30:00.000000100Z'/><EventRecordID>77</EventRecordID><Channel>Microsoft-Windows-BitLocker/BitLocker Management</Channel></System><UserData><Unlock xmlns='http://manifests.microsoft.com/win/2004/08/windows/bitlocker'><VolumeName>D:</VolumeName><ProtectorGUID>{3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C}</ProtectorGUID></Unlock></UserData></Event>`

func TestParseEventXML(t *testing.T) {
	e, err := bitlocker.ParseEventXML([]byte(recoveryEventXML))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 24652 || !e.Time.Equal(time.Date(2019, 3, 4, 7, 15, 31, 421000000, time.UTC)) || len(e.Data) != 5 ||
		e.Data[4] != "{8a696888-99a7-4fac-92c7-6cc497ea7bdf}" {
		t.Fatalf("parsed %+v", e)
	}
	e, err = bitlocker.ParseEventXML([]byte(managementEventXML))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 782 || len(e.Data) != 2 || e.Data[1] != "{3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C}" {
		t.Fatalf("parsed %+v", e)
	}
}

func TestParseEventXMLRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":        ``,
		"not XML":      `{"Id": 24652}`,
		"other root":   `<Events/>`,
		"no ID":        `<Event><System><TimeCreated SystemTime='2019-03-04T07:15:31Z'/></System></Event>`,
		"ID too large": `<Event><System><EventID>99999999</EventID><TimeCreated SystemTime='2019-03-04T07:15:31Z'/></System></Event>`,
		"no time":      `<Event><System><EventID>24652</EventID></System></Event>`,
		"bad time":     `<Event><System><EventID>24652</EventID><TimeCreated SystemTime='254793-568007'/></System></Event>`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bitlocker.ParseEventXML([]byte(in))
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "254793") {
				t.Fatalf("error %q quotes the input", err)
			}
		})
	}
}
