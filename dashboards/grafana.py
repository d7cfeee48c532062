"""Turn DashboardSpec into Grafana dashboard JSON with grafana-foundation-sdk.

The SDK (Grafana's own, generated from Grafana's schemas; the pinned build
targets Grafana 10.1) gives typed builders, so a misspelt option is a type
error rather than a panel Grafana silently ignores.  Only this module imports
it; the specs stay plain data.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

from dashboards.spec import DashboardSpec, Kind, PanelSpec, Query

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Template variables.  Values are (label, query); each dashboard says which it
# uses and which allow several values (DashboardSpec.multi).
VARIABLE_QUERIES = {
    "instance": ("Host", "label_values(vprof_build_info, instance)"),
    "vm": ("VM", 'label_values(vprof_vm_info{instance=~"$instance"}, vm)'),
    "bucket": ("Bucket", 'label_values(vprof_vm_events_total{instance=~"$instance"}, bucket)'),
}

_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _variable(name: str, multi: bool) -> db.DatasourceVariable | db.QueryVariable:
    if name == "datasource":
        return db.DatasourceVariable("datasource").label("Data source").type("prometheus")
    label, query = VARIABLE_QUERIES[name]
    var = (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        # ".*" rather than Grafana's default of listing every value keeps
        # queries short on large fleets.
        var = var.multi(True).include_all(True).all_value(".*")
    return var


def _target(query: Query, index: int, kind: Kind) -> prom.Dataquery:
    target = prom.Dataquery().expr(query.expr).ref_id(_REF_IDS[index])
    target = target.legend_format(query.legend or "__auto")
    if kind is Kind.HEATMAP:
        target = target.format(pm.PromQueryFormat.HEATMAP)
    elif kind is Kind.TABLE:
        target = target.format(pm.PromQueryFormat.TABLE)
    return target.instant() if query.instant else target.range()


def _timeseries(spec: PanelSpec) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI))
        .line_width(1)
        .fill_opacity(10)
        .min(0)
    )
    if spec.kind is Kind.STACKED:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40)
    return panel


def _reduce() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _visual(spec: PanelSpec) -> Any:
    """The SDK builder for the panel's visualisation, before common settings."""
    if spec.kind in (Kind.TIMESERIES, Kind.STACKED):
        return _timeseries(spec)
    if spec.kind is Kind.BARGAUGE:
        return (
            bargauge.Panel()
            .orientation(cm.VizOrientation.HORIZONTAL)
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(_reduce())
            .min(0)
        )
    if spec.kind is Kind.STAT:
        return stat.Panel().reduce_options(_reduce()).graph_mode(cm.BigValueGraphMode.AREA)
    if spec.kind is Kind.TABLE:
        return table.Panel().show_header(True)
    return (
        heatmap.Panel()
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(spec.unit))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .show_value(cm.VisibilityMode.NEVER)
    )


# A data link from a per-VM series to that VM's dashboard, keeping the time
# range and the datasource.
VM_LINK = (
    "/d/vprof-vm/vprof-vm?${__url_time_range}&${datasource:queryparam}"
    "&var-instance=${__field.labels.instance}&var-vm=${__field.labels.vm}"
)


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    panel = (
        _visual(spec)
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .span(spec.width)
        .height(spec.height)
    )
    for i, query in enumerate(spec.queries):
        panel = panel.with_target(_target(query, i, spec.kind))
    if spec.links_to_vm:
        link = db.DashboardLink("Open the VM dashboard").type(dm.DashboardLinkType.LINK)
        panel = panel.data_links([link.url(VM_LINK)])
    return panel


def build(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard as a JSON-ready dict, stable from run to run."""
    dash = (
        db.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["vprof", "kvm", "virtualization"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            db.DashboardLink("vprof dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["vprof"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for name in spec.variables:
        dash = dash.with_variable(_variable(name, name in spec.multi))
    panel_id = 0
    for row in spec.rows:
        panel_id += 1
        dash = dash.with_row(db.Row(row.title).id(panel_id))
        for panel_spec in row.panels:
            panel_id += 1
            dash = dash.with_panel(_panel(panel_spec, panel_id))
    encoded: dict[str, Any] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    return encoded


def render(spec: DashboardSpec) -> str:
    """The file text of dashboards/<spec.filename>."""
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"
