package bitlocker

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseEventXML reads an event as EvtRender renders it (EvtRenderEventXml): its ID, the time it
// was written and its data values in order (EventData/Data, or the values of UserData's one
// element). Everything else is ignored. An event's data is text a program wrote, not key
// material; errors still quote none of it.
func ParseEventXML(b []byte) (LogEvent, error) {
	var doc struct {
		XMLName xml.Name `xml:"Event"`
		System  struct {
			EventID     string `xml:"EventID"`
			TimeCreated struct {
				SystemTime string `xml:"SystemTime,attr"`
			} `xml:"TimeCreated"`
		} `xml:"System"`
		EventData struct {
			Data []struct {
				Value string `xml:",chardata"`
			} `xml:"Data"`
		} `xml:"EventData"`
		UserData struct {
			Inner struct {
				Fields []struct {
					Value string `xml:",chardata"`
				} `xml:",any"`
			} `xml:",any"`
		} `xml:"UserData"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return LogEvent{}, errors.New("event XML: not a well-formed Event element")
	}
	id, err := strconv.Atoi(strings.TrimSpace(doc.System.EventID))
	if err != nil || id < 0 || id > 65535 {
		return LogEvent{}, errors.New("event XML: System/EventID is not a number from 0 to 65535")
	}
	ts, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(doc.System.TimeCreated.SystemTime))
	if err != nil {
		return LogEvent{}, fmt.Errorf("event %d XML: System/TimeCreated/@SystemTime is not an RFC 3339 time", id)
	}
	e := LogEvent{ID: id, Time: ts.UTC()}
	for _, d := range doc.EventData.Data {
		e.Data = append(e.Data, strings.TrimSpace(d.Value))
	}
	for _, f := range doc.UserData.Inner.Fields {
		e.Data = append(e.Data, strings.TrimSpace(f.Value))
	}
	return e, nil
}
