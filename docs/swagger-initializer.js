// Swagger UI for WinDI Chat: the spec and every asset come from this
// server; nothing is loaded from elsewhere (validatorUrl: null turns off
// the badge that would ask an online validator).
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Keep the token from Authorize across page reloads (localStorage).
    persistAuthorization: true,
    validatorUrl: null,
    oauth2RedirectUrl: window.location.origin + "/docs/oauth2-redirect.html",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
