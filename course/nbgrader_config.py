"""nbgrader's configuration of the book's course (read by ``python -m cam_core course`` and by
``nbgrader`` itself when run in this folder: ``cd course && nbgrader generate_assignment a1_gradcam``)."""

c = get_config()  # noqa: F821 -- provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "cam_core"
# scratch that a notebook run in the source folder may leave behind is not released
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "results", "scratch"]
# what a student sees in place of a solution
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# each cell of a graded notebook may run this long (python -m cam_core course grade --timeout S)
c.Execute.timeout = 120
# a test cell a student deleted is put back (and then fails or passes on its own)
c.OverwriteCells.add_missing_cells = True
