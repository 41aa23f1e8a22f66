// The API reference: Swagger UI on this server's own OpenAPI document
// (relative, so that it works behind a path prefix too).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Calls from "Try it out" carry the browser's session cookie; the
    // API's CSRF rules apply to them as to any page of this origin.
    withCredentials: true,
  });
});
