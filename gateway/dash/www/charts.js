// charts.js: Chart.js 3.9 (Debian's libjs-chart.js, served by the gateway at
// static/vendor/chart.js as its UMD build, which defines the global Chart).
// Every chart is a canvas with role="img" and a label naming what it shows;
// the numbers it plots are also on the page as text or tables.

const palette = ['#1d4ed8', '#b45309', '#047857', '#7c3aed', '#be123c', '#0e7490'];
const grouped = new Intl.NumberFormat();

function ChartJs() {
  if (!globalThis.Chart) throw new Error('Chart.js did not load (static/vendor/chart.js)');
  return globalThis.Chart;
}

// chart(canvas, type, labels, series): series = [{label, data}]. Returns the
// Chart instance; update(chart, labels, series) changes its data in place.
export function chart(canvas, type, labels, series, opts = {}) {
  const Chart = ChartJs();
  return new Chart(canvas, {
    type,
    data: { labels, datasets: series.map((s, i) => dataset(type, s, i)) },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { stacked: !!opts.stacked, ticks: { maxRotation: 0, autoSkip: true } },
        y: { stacked: !!opts.stacked, beginAtZero: true, ticks: { callback: (v) => grouped.format(v) } },
      },
      plugins: { legend: { display: series.length > 1, position: 'bottom' } },
    },
  });
}

function dataset(type, s, i) {
  const color = palette[i % palette.length];
  return {
    label: s.label,
    data: s.data,
    borderColor: color,
    backgroundColor: type === 'line' ? `${color}33` : color,
    fill: type === 'line',
    tension: 0.25,
    pointRadius: type === 'line' ? 0 : undefined,
    borderWidth: 2,
  };
}

export function update(c, labels, series) {
  c.data.labels = labels;
  series.forEach((s, i) => {
    if (c.data.datasets[i]) c.data.datasets[i].data = s.data;
  });
  c.update('none');
}

// canvasBox(label): a canvas inside a sized box, labelled for screen readers.
export function canvasBox(label) {
  const box = document.createElement('div');
  box.className = 'chart';
  const c = document.createElement('canvas');
  c.setAttribute('role', 'img');
  c.setAttribute('aria-label', label);
  box.append(c);
  return { box, canvas: c };
}
