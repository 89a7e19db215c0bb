// The API reference: Swagger UI on this governor's OpenAPI document (no inline script:
// the pages' Content-Security-Policy allows scripts from this origin only).
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapi,
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
  });
});
