"""Jobs: what a front asks for (``specs``), the checks a request passes (``checks``), the clip a job
reads (``clip``), a request checked and planned into what the engine runs (``prepared``), the job
layer that prepares, plans and runs jobs for every front (``layer``), and what a running job
reports (``events``)."""
