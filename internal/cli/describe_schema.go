package cli

import (
	"fmt"
	"io"
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
