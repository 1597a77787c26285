// The dashboard SPA (dash-ui writes it): plain ES modules, no build step.
export {};
