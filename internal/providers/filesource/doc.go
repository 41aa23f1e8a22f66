// Package filesource is the second source of TokenProviders: a file, or a
// folder of files, of multi-document YAML holding TokenProvider
// (tokenstore.io/v1alpha1) and Secret (v1) manifests, for `tokenstore dev`
// and for installs without Kubernetes.
//
// It follows the design's "one schema, one validation, one reconcile path,
// two sources":
//   - one schema and validation: manifests are checked against the CRD that
//     controller-gen generates (embedded by package config/crd) with the
//     API server's own code: pruning of unknown fields (refused, as kubectl's
//     strict validation does), structural defaulting, the OpenAPI v3 schema
//     and the CEL x-kubernetes-validations; see Validator.
//   - one reconcile path: valid providers are resolved by resolve.Resolve
//     (internal/providers/resolve), exactly as the Kubernetes reconciler
//     resolves them, into the same providers.Registry, through its
//     SourceFile writer; see Source.
//
// Wiring, for `dev` or `serve` with PROVIDERS_FILE set:
//
//	src, err := filesource.New(filesource.Options{ // registers the file writer
//		Path:       settings.ProvidersFile,
//		Registry:   registry,
//		Discoverer: discoverer, // shared with the rest of the process
//		Logger:     log,
//	})
//	if err != nil { ... }            // the path does not exist, or the CRD is broken
//	go src.Run(ctx)                  // until ctx ends
//	<-src.ReadyC()                   // the file writer is synced: registry.Ready once every source is
//	src.Statuses(); src.Errors()     // for the dev UI and logs
//
// A bad document does not take down the good ones: each is reported (logged
// by the Source, returned by Errors, and as an InvalidSpec status for a
// provider id it names) and the rest load.
package filesource
