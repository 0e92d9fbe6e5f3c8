// Package e2e holds end-to-end tests that run against servers deployed
// outside the test process, the way users reach them: through the nginx
// proxy of deploy/nginx in front of several replicas sharing Postgres and
// Redis. .ci/run starts that deployment (step e2e_nginx) and points the
// tests at it with WINDI_E2E_URL; without it they skip. The package also
// checks docker-compose.yml against the proxy template (step
// compose_config), which needs no running server.
package e2e
