// Package metrics holds WinDI Chat's Prometheus metrics. Each server has its
// own registry, so tests can run several servers in one process. Every
// method is safe on a nil *Metrics, which records nothing.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are one server's collectors.
type Metrics struct {
	reg             *prometheus.Registry
	connections     prometheus.Gauge
	connsOpened     prometheus.Counter
	slowConsumers   prometheus.Counter
	messagesStored  prometheus.Counter
	duplicates      prometheus.Counter
	deliveries      prometheus.Counter
	deliveryLatency prometheus.Histogram
	brokerErrors    *prometheus.CounterVec
	httpRequests    *prometheus.CounterVec
	httpDuration    *prometheus.HistogramVec
}

// New returns metrics registered on a fresh registry together with the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "windi_ws_connections", Help: "Open WebSocket connections on this replica."}),
		connsOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "windi_ws_connections_opened_total", Help: "WebSocket connections opened."}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "windi_ws_slow_consumers_total", Help: "Connections closed because they could not keep up (4008)."}),
		messagesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "windi_messages_stored_total", Help: "Messages committed by this replica."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "windi_duplicates_total", Help: "Repeated sends collapsed onto the original message."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "windi_deliveries_total", Help: "message.new frames queued to connections."}),
		deliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "windi_delivery_latency_seconds",
			Help:    "From commit of a message to its message.new frame being queued on a connection.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		brokerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "windi_broker_errors_total", Help: "Broker operations that failed, by operation."}, []string{"op"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "windi_http_requests_total", Help: "HTTP requests by method, route and status."}, []string{"method", "route", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "windi_http_request_duration_seconds", Help: "HTTP request duration by method and route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connections, m.connsOpened, m.slowConsumers, m.messagesStored, m.duplicates, m.deliveries,
		m.deliveryLatency, m.brokerErrors, m.httpRequests, m.httpDuration,
	)
	// Export every broker operation at zero, so a dashboard sees the series
	// before the first failure.
	for _, op := range []string{"publish", "subscribe", "unsubscribe", "decode", "presence", "presence_refresh", "claim", "hit"} {
		m.brokerErrors.WithLabelValues(op)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ConnOpened counts a new WebSocket connection.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.connections.Inc()
		m.connsOpened.Inc()
	}
}

// ConnClosed counts a closed WebSocket connection.
func (m *Metrics) ConnClosed() {
	if m != nil {
		m.connections.Dec()
	}
}

// SlowConsumer counts a connection closed for not keeping up.
func (m *Metrics) SlowConsumer() {
	if m != nil {
		m.slowConsumers.Inc()
	}
}

// MessageStored counts a committed message.
func (m *Metrics) MessageStored() {
	if m != nil {
		m.messagesStored.Inc()
	}
}

// Duplicate counts a collapsed repeat send.
func (m *Metrics) Duplicate() {
	if m != nil {
		m.duplicates.Inc()
	}
}

// Delivered counts a message.new frame queued to a connection; storedAt is
// when the message was committed (zero when unknown).
func (m *Metrics) Delivered(storedAt time.Time) {
	if m == nil {
		return
	}
	m.deliveries.Inc()
	if !storedAt.IsZero() {
		m.deliveryLatency.Observe(time.Since(storedAt).Seconds())
	}
}

// BrokerError counts a failed broker operation.
func (m *Metrics) BrokerError(op string) {
	if m != nil {
		m.brokerErrors.WithLabelValues(op).Inc()
	}
}

// knownMethods are the HTTP methods that get a label value of their own.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

// Label values that stand for everything else, so that no request, even an
// unauthenticated one, can add a series: each series costs memory on every
// scrape for ever.
const (
	OtherMethod    = "other"
	UnmatchedRoute = "unmatched"
)

// HTTPRequest counts one HTTP request. route is the route template, never
// the raw path; "" (no route matched) becomes UnmatchedRoute, and a method
// outside RFC 9110's becomes OtherMethod.
func (m *Metrics) HTTPRequest(method, route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	if !knownMethods[method] {
		method = OtherMethod
	}
	if route == "" {
		route = UnmatchedRoute
	}
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(method, route).Observe(d.Seconds())
}
