package filesource

import (
	"context"
	"errors"
	"fmt"
	"sync"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/config/crd"
)

// Validator checks TokenProvider objects the way the API server does on
// create: unknown fields are refused (kubectl's default strict field
// validation), defaults are applied, then the object must satisfy the CRD's
// OpenAPI v3 schema and its CEL x-kubernetes-validations. All of it is driven
// by the generated CRD, so a rule added to the Go types' markers reaches the
// file source with `make manifests` and nothing else.
//
// A Validator is safe for concurrent use.
type Validator struct {
	structural      *structuralschema.Structural
	schemaValidator apiextensionsvalidation.SchemaValidator
	// cel is nil when the schema has no x-kubernetes-validations.
	cel *cel.Validator
}

var (
	defaultValidatorOnce sync.Once
	defaultValidator     *Validator
	defaultValidatorErr  error
)

// DefaultValidator returns the Validator for the TokenProvider CRD compiled
// into the binary (package config/crd). It is built once: compiling the CEL
// programs is the expensive part.
func DefaultValidator() (*Validator, error) {
	defaultValidatorOnce.Do(func() {
		b := crd.TokenProviders()
		if len(b) == 0 {
			defaultValidatorErr = fmt.Errorf("the TokenProvider CRD is missing from the binary (%s)", crd.TokenProvidersFile)
			return
		}
		defaultValidator, defaultValidatorErr = NewValidator(b)
	})
	return defaultValidator, defaultValidatorErr
}

// NewValidator builds a Validator from a CustomResourceDefinition manifest
// (YAML or JSON) of tokenproviders.tokenstore.io, using the schema of
// version v1alpha1.
func NewValidator(crdManifest []byte) (*Validator, error) {
	var def apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(crdManifest, &def); err != nil {
		return nil, fmt.Errorf("reading the TokenProvider CRD: %w", err)
	}
	gvk := v1alpha1.GroupVersion.WithKind(kindTokenProvider)
	if def.Spec.Group != gvk.Group || def.Spec.Names.Kind != gvk.Kind {
		return nil, fmt.Errorf("the CRD defines %s %s, not %s", def.Spec.Group, def.Spec.Names.Kind, gvk.GroupKind())
	}
	var version *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range def.Spec.Versions {
		if def.Spec.Versions[i].Name == gvk.Version {
			version = &def.Spec.Versions[i]
		}
	}
	if version == nil || version.Schema == nil || version.Schema.OpenAPIV3Schema == nil {
		return nil, fmt.Errorf("the TokenProvider CRD has no OpenAPI v3 schema for version %s", gvk.Version)
	}

	// The apiserver's helpers work on the internal form of the schema.
	var internal apiextensionsinternal.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(version.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		return nil, fmt.Errorf("converting the TokenProvider schema: %w", err)
	}
	structural, err := structuralschema.NewStructural(&internal)
	if err != nil {
		return nil, fmt.Errorf("the TokenProvider schema is not structural: %w", err)
	}
	// As the apiserver does when it serves a CRD: the schema is shared with
	// the defaulting below, so work on a copy and drop defaults that would
	// be pruned anyway.
	structural = structural.DeepCopy()
	if err := structuraldefaulting.PruneDefaults(structural); err != nil {
		return nil, fmt.Errorf("pruning the TokenProvider schema's defaults: %w", err)
	}
	schemaValidator, _, err := apiextensionsvalidation.NewSchemaValidator(&internal)
	if err != nil {
		return nil, fmt.Errorf("building the TokenProvider schema validator: %w", err)
	}
	v := &Validator{structural: structural, schemaValidator: schemaValidator}
	// The CEL programs are compiled here, once; a rule that does not compile
	// shows as an error on every object it applies to, as in the apiserver.
	v.cel = cel.NewValidator(structural, true, celconfig.PerCallLimit)
	return v, nil
}

// ValidateTokenProvider checks one TokenProvider given as the decoded JSON of
// a manifest (maps, slices, strings, int64, float64, bool, nil). It modifies
// obj: unknown fields are pruned, defaults are filled in, status is dropped.
// On success it returns the typed, defaulted object; otherwise the errors,
// with field paths as kubectl shows them. namespace is used when the object
// names none.
func (v *Validator) ValidateTokenProvider(ctx context.Context, obj map[string]any, namespace string) (*v1alpha1.TokenProvider, field.ErrorList) {
	if errs := validateTypeMeta(obj, v1alpha1.GroupVersion.String(), kindTokenProvider); len(errs) > 0 {
		return nil, errs
	}
	// Status is written by the controller, never by the author: the
	// apiserver ignores it on create (status subresource), and so do we, so
	// that the output of `kubectl get -o yaml` can be reused as it is.
	delete(obj, "status")

	var errs field.ErrorList
	// kubectl's default is strict field validation: a field the schema does
	// not know is refused rather than silently dropped, which catches typos
	// such as "discoveryUrl".
	unknown := structuralpruning.PruneWithOptions(obj, v.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range unknown {
		errs = append(errs, &field.Error{Type: field.ErrorTypeForbidden, Field: p, Detail: "unknown field"})
	}
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, v.structural)
	if ferr := schemaobjectmeta.Coerce(nil, obj, v.structural, true, false); ferr != nil {
		errs = append(errs, ferr)
	}
	structuraldefaulting.Default(obj, v.structural)

	meta, metaErrs := objectMeta(obj)
	if len(metaErrs) > 0 {
		return nil, append(errs, metaErrs...)
	}
	if meta.Namespace == "" {
		meta.Namespace = namespace
	}
	errs = append(errs, apimachineryvalidation.ValidateObjectMeta(meta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	errs = append(errs, apiextensionsvalidation.ValidateCustomResource(nil, obj, v.schemaValidator)...)
	errs = append(errs, schemaobjectmeta.Validate(ctx, nil, obj, v.structural, false)...)
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	// The apiserver skips CEL when an earlier error means the rules could
	// see values of the wrong type; the rules' messages would then mislead.
	if v.cel != nil && !hasTypeError(errs) {
		celErrs, _ := v.cel.Validate(ctx, nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}

	tp := &v1alpha1.TokenProvider{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, tp); err != nil {
		// The schema accepted it, so this is a mismatch between the CRD and
		// the Go types (a stale CRD); say so rather than blame the author.
		return nil, field.ErrorList{field.InternalError(nil, fmt.Errorf("the object passed the CRD schema but does not fit the Go types (is the CRD stale?): %w", err))}
	}
	tp.Namespace = meta.Namespace
	return tp, nil
}

// hasTypeError reports errors after which CEL must not run, as the
// apiserver's hasBlockingErr does: wrong types and internal errors.
func hasTypeError(errs field.ErrorList) bool {
	for _, e := range errs {
		if e.Type == field.ErrorTypeTypeInvalid || e.Type == field.ErrorTypeInternal {
			return true
		}
	}
	return false
}

// validateTypeMeta refuses an object of another kind or version, with the
// apiserver's wording.
func validateTypeMeta(obj map[string]any, apiVersion, kind string) field.ErrorList {
	var errs field.ErrorList
	if k, _ := obj["kind"].(string); k != kind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), obj["kind"], "must be "+kind))
	}
	if av, _ := obj["apiVersion"].(string); av != apiVersion {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), obj["apiVersion"], "must be "+apiVersion))
	}
	return errs
}

// objectMeta reads metadata out of an object, as the apiserver's
// getObjectMeta does.
func objectMeta(obj map[string]any) (*metav1.ObjectMeta, field.ErrorList) {
	raw, ok := obj["metadata"]
	if !ok || raw == nil {
		return &metav1.ObjectMeta{}, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), raw, fmt.Sprintf("must be an object, not %T", raw))}
	}
	meta := &metav1.ObjectMeta{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, meta); err != nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), "", err.Error())}
	}
	return meta, nil
}

// errNoValidator is returned by functions that need a Validator and got nil.
var errNoValidator = errors.New("filesource: no validator")
