package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/edgeport/edgeport/internal/config"
)

// describeSchemaVersions lists a Schema's versions with the content hash
// each is stored under (the hash connectors and the registry API use).
func describeSchemaVersions(w io.Writer, s *config.SchemaSpec) {
	fmt.Fprintln(w, "Versions:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tHASH\tBYTES\tDESCRIPTION")
	for _, v := range s.Versions {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", v.Name, config.SchemaContentHash(v.SchemaContent), len(v.SchemaContent), v.Description)
	}
	_ = tw.Flush()
}

// describeSchemaUses lists what uses a schema: dataflows (the source's or
// the transformation's schemaRef) and asset datasets whose connector
// registered it, with their topics.
func describeSchemaUses(w io.Writer, st *config.Status) {
	if st == nil || len(st.UsedBy) == 0 {
		fmt.Fprintln(w, "Used by: nothing")
		return
	}
	fmt.Fprintln(w, "Used by:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tNAME\tROLE\tVERSION\tTOPICS")
	for _, u := range st.UsedBy {
		where := strings.Join(u.Topics, ",")
		if u.Destination != "" {
			where = "to " + u.Destination
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", u.Kind, u.Name, u.Role, u.Version, where)
	}
	_ = tw.Flush()
}
