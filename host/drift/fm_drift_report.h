/* fm_drift_report.h: a stored drift run as a terminal table, as JSON, and as
 * a self-contained HTML page (per-pixel heat map PNG embedded in base64, mean
 * images, the predicted-class comparison, the top drifted features). */
#ifndef FM_DRIFT_REPORT_H
#define FM_DRIFT_REPORT_H

#include <stdio.h>

#include "fm_drift.h"

/* The verdict, the window and the `top` strongest features. */
void fm_drift_report_text(FILE *f, const fm_drift_run_t *r, int top);
/* Every field of the run and all features (strongest first), as JSON. */
int fm_drift_report_json(FILE *f, const fm_drift_run_t *r);
/* Writes the HTML report to `path` (via a temporary file and rename). */
int fm_drift_report_html(const char *path, const fm_drift_run_t *r, int top);

/* The heat map alone: 28x28 per-pixel drift strengths, each pixel `scale`
 * screen pixels wide, as RGB (malloc'd, (28*scale)^2*3 bytes). */
uint8_t *fm_drift_heatmap_rgb(const fm_drift_run_t *r, int scale);

#endif /* FM_DRIFT_REPORT_H */
