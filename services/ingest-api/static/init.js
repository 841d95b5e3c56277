// Swagger UI on this server's own document; "Try it out" sends requests to this server (the document
// names no other). No top bar, no ?url= override, no call to validator.swagger.io; the key entered under
// "Authorize" is kept in the page only, never in the browser's storage.
window.addEventListener('load', () => {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    validatorUrl: null,
    queryConfigEnabled: false,
    persistAuthorization: false,
    displayRequestDuration: true,
  });
});
