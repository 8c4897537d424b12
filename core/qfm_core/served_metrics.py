"""Quality metrics the scoring model publishes on Triton's metrics port (pb_utils.MetricFamily),
beside Triton's own (throughput, latency, queue time). Names and buckets are defined here once:
the model, the Grafana dashboard (serving/grafana/qfm_dashboard.json) and the tests read them.

    qfm_served_score            histogram of the scores served (0..100), one observation per image
    qfm_item_errors_total       counter of images given an ITEM_ERROR, and of refused requests, by code
    qfm_images_per_request      histogram of images per request

A shift of the served-score distribution (the share of images below a bucket, or the mean
sum/count over a window, against last week's) is the first sign that the incoming photographs
changed or that a deployment serves other weights.
"""
SCORE = "qfm_served_score"
ITEM_ERRORS = "qfm_item_errors_total"
IMAGES_PER_REQUEST = "qfm_images_per_request"

SCORE_BUCKETS = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
IMAGES_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
REQUEST_REFUSED = "REQUEST_REFUSED"   # the code counted for a request over the request limits
