"""HTTP below the API: errors and their envelope, the connection guard, the middleware every request passes, CORS."""
